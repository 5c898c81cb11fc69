"""Registers the built-in capture formats, through the hook a third-party format uses too."""

from kdcore.data.formats.busmaster import Busmaster
from kdcore.data.formats.candump import Candump
from kdcore.data.formats.car_hacking import CarHackingCsv, CarHackingText
from kdcore.data.formats.ctt import CttCsv
from kdcore.data.formats.pcan import PcanTrace
from kdcore.data.formats.vector import VectorAsc, VectorBlf
from kdcore.hookspecs import hookimpl


@hookimpl
def kdcore_register_formats(register):
    for capture_format in (VectorBlf, Busmaster, PcanTrace, VectorAsc, CttCsv, CarHackingText, CarHackingCsv, Candump):
        register(capture_format)
