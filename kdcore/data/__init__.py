"""From CAN traffic to batches of PyG graphs: captures → frames → windows → graphs → loaders.

Everything up to the graphs (``formats``, ``frames``, ``windows``, ``graphs``, ``captures``) is
numpy alone; torch enters with the datasets served to loaders (``graphset``, ``module``).
"""
