import subprocess
import sys


def test_submodules_are_reachable_as_attributes():
    # A fresh interpreter: nothing imported the submodules before.
    code = (
        "import skpatch, sys\n"
        "assert 'skpatch.metrics' not in sys.modules\n"
        "assert callable(skpatch.metrics.pixel_auroc)\n"
        "assert callable(skpatch.datasets.make_defects)\n"
        "assert 'metrics' in dir(skpatch)\n"
        "try:\n"
        "    skpatch.no_such_thing\n"
        "except AttributeError as exc:\n"
        "    assert 'no_such_thing' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
