"""ecom_core.heap: what survives a full collection is frozen, so the next one walks only what came
since; garbage is still collected. Each check runs in a fresh interpreter (the callback is global)."""

from __future__ import annotations

import subprocess
import sys

from ecom_core.config import PROJECT_ROOT as ROOT


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_a_full_collection_freezes_its_survivors_and_garbage_is_still_collected():
    out = _run("""
import gc, weakref
from ecom_core import heap

class Node:
    pass

kept = [{"Items": [{"S": str(n)}]} for n in range(50_000)]  # a dict and a list each: tracked
gc.collect()
before = len(gc.get_objects(generation=2))
heap.freeze_survivors_of_full_collections()
heap.freeze_survivors_of_full_collections()          # once per process, however often called
assert gc.callbacks.count(heap._freeze_after_full) == 1
gc.collect()
# The long-lived heap left the generation a full collection walks.
assert before > 100_000 and len(gc.get_objects(generation=2)) == 0, before
assert gc.get_freeze_count() >= 100_000

# A cycle made afterwards is still found and freed by the next collection.
cycle = Node(); cycle.self = cycle
probe = weakref.ref(cycle)
del cycle
gc.collect()
assert probe() is None

# A frozen object that loses its last reference is freed as before (reference counting).
watched = Node(); kept.append(watched)
gc.collect()
gone = weakref.ref(watched)
del watched; kept.pop()
assert gone() is None

# Young collections do not freeze anything.
frozen = gc.get_freeze_count()
gc.collect(0); gc.collect(1)
assert gc.get_freeze_count() == frozen
print("ok")
""")
    assert out.splitlines()[-1] == "ok"


def test_the_emulator_and_the_stream_trigger_install_it():
    """The two processes it was measured for: MiniStack through our launcher, and the trigger's
    warm Lambda worker (installed by the handler, so importing the module changes nothing)."""
    out = _run("""
import gc
from ecom_core import heap
from handlers import stream_trigger
assert heap._freeze_after_full not in gc.callbacks   # importing the module does not install it
assert stream_trigger.handler({"Records": []}, None) == {"records": 0}
assert heap._freeze_after_full in gc.callbacks
print("ok")
""")
    assert out.splitlines()[-1] == "ok"
    out = _run("""
import gc
from ecom_core import heap
from bootstrap import ministack_launcher
ministack_launcher.apply()
assert heap._freeze_after_full in gc.callbacks
print("ok")
""")
    assert out.splitlines()[-1] == "ok"
