#!/usr/bin/python3
"""Runs the integration tests: every test_* function of every
tests/integration/test_*.py, in file then definition order.

A test's parameters name its fixtures (context managers from the module's
FIXTURES dict, else envoy.FIXTURES); each test gets fresh ones. Prints
"ok - name" or "not ok - name" and the failure, then "N passed, N failed";
exits 1 on any failure. Arguments are substring filters on
"module.function".

Environment: BUILD (default "build") names the build folder holding kepp and
the generated message classes (make proto-py).
"""
import contextlib
import importlib
import inspect
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_TIMEOUT = int(os.environ.get("KEPP_IT_TIMEOUT", "180"))


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout("test timed out after %ds" % TEST_TIMEOUT)


def discover(filters):
    tests = []
    for name in sorted(os.listdir(HERE)):
        if not (name.startswith("test_") and name.endswith(".py")):
            continue
        mod = importlib.import_module(name[:-3])
        funcs = [f for n, f in vars(mod).items()
                 if n.startswith("test_") and inspect.isfunction(f)
                 and f.__module__ == mod.__name__]
        funcs.sort(key=lambda f: f.__code__.co_firstlineno)
        for f in funcs:
            full = "%s.%s" % (mod.__name__, f.__name__)
            if not filters or any(s in full for s in filters):
                tests.append((full, mod, f))
    return tests


def run_one(mod, func, envoy):
    fixtures = dict(envoy.FIXTURES)
    fixtures.update(getattr(mod, "FIXTURES", {}))
    with contextlib.ExitStack() as stack:
        kwargs = {}
        for p in inspect.signature(func).parameters:
            if p not in fixtures:
                raise LookupError("unknown fixture %r" % p)
            kwargs[p] = stack.enter_context(fixtures[p]())
        func(**kwargs)


def main(argv):
    sys.path.insert(0, HERE)
    import envoy  # noqa: E402  (needs HERE on sys.path)

    signal.signal(signal.SIGALRM, _alarm)
    passed = failed = 0
    try:
        tests = discover(argv[1:])
    except Exception:
        traceback.print_exc()
        print("0 passed, 1 failed")
        return 1
    for full, mod, func in tests:
        t0 = time.time()
        signal.alarm(TEST_TIMEOUT)
        try:
            run_one(mod, func, envoy)
            err = None
        except BaseException as e:  # noqa: B902 (a test failure of any kind)
            if isinstance(e, KeyboardInterrupt):
                raise
            err = traceback.format_exc()
        finally:
            signal.alarm(0)
            envoy.kill_all()
        dt = time.time() - t0
        if err is None:
            passed += 1
            print("ok - %s (%.1fs)" % (full, dt), flush=True)
        else:
            failed += 1
            print("not ok - %s (%.1fs)" % (full, dt), flush=True)
            for line in err.rstrip().splitlines():
                print("    " + line)
            sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
