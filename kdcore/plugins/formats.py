"""Registers the built-in capture formats, through the hook a third-party format uses too."""

from kdcore.data.formats.busmaster import Busmaster
from kdcore.data.formats.candump import Candump, CandumpConsole, LabelledCandump
from kdcore.data.formats.car_hacking import CarHackingCsv, CarHackingText
from kdcore.data.formats.ctt import CttCsv
from kdcore.data.formats.j1939 import J1939Csv
from kdcore.data.formats.pcan import PcanTrace
from kdcore.data.formats.road import RoadCsv
from kdcore.data.formats.vector import VectorAsc, VectorBlf
from kdcore.hookspecs import hookimpl

BUILT_IN = (
    VectorBlf, Busmaster, PcanTrace, VectorAsc, CttCsv, J1939Csv, CarHackingText, CarHackingCsv, RoadCsv,
    CandumpConsole, LabelledCandump, Candump,
)


@hookimpl
def kdcore_register_formats(register):
    for capture_format in BUILT_IN:
        register(capture_format)
