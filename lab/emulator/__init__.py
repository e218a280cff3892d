"""An emulator of ИПС ЕГИСЗ + РЭМД for МИС sandboxes and the pipeline's tests (``emd emulator``).

Modules, one concern each: ``server`` (HTTP, ``Emulator``), ``registry`` (registered documents and the
request log), ``checks`` (what РЭМД verifies), ``callbacks`` (file pull and result callback),
``faults`` (fault rules and named scenarios), ``systems`` (registered ИС and their certificates).
See docs/emulator.md.
"""

from lab.emulator.faults import SCENARIOS, Rule, Scenario, rejection_for, scenario
from lab.emulator.registry import Registry, RegistryRecord, RequestEntry
from lab.emulator.server import Emulator
from lab.emulator.systems import System, load_systems

__all__ = [
    "SCENARIOS",
    "Emulator",
    "Registry",
    "RegistryRecord",
    "RequestEntry",
    "Rule",
    "Scenario",
    "System",
    "load_systems",
    "rejection_for",
    "scenario",
]
