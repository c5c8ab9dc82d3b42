#!/usr/bin/env python3
"""run.py: the natwrp integration test runner.

    python3 test/integ/run.py [-k SUBSTRING] [-l] [-j 1]

Discovers every function test_* in test/integ/test_*.py (file order, then
definition order) and runs each in its own process group with a timeout
(60 s, or the function's @timed(N)). Each test gets a fresh harness.Ctx; its
processes log to build/test-logs/<test>/. Prints "ok NAME" or "FAIL NAME" with
the reason and the tail of the test's logs, and ends with exactly
"N passed, N failed". Exits 1 on any failure.

NATWRP_BIN selects the binary (default build/asan/natwrp).
"""

import argparse
import fcntl
import glob
import importlib.util
import os
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

DEFAULT_TIMEOUT = 60


def load_module(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def discover():
    tests = []
    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        mod = load_module(path)
        fns = [v for k, v in vars(mod).items()
               if k.startswith("test_") and callable(v) and getattr(v, "__module__", None) ==
               mod.__name__]
        fns.sort(key=lambda f: f.__code__.co_firstlineno)
        for f in fns:
            tests.append((path, f.__name__, getattr(f, "timeout", DEFAULT_TIMEOUT)))
    return tests


def run_one(path, name):
    """Child mode: run one test in this process; exit 0 on success."""
    mod = load_module(path)
    fn = getattr(mod, name)
    ctx = harness.Ctx(name)
    ok = True
    try:
        fn(ctx)
    except harness.TestFailure as e:
        ok = False
        print("reason: %s" % e)
    except Exception:
        ok = False
        print("reason: exception\n%s" % traceback.format_exc())
    finally:
        problems = ctx.cleanup()
    for p in problems:
        ok = False
        print("reason: %s" % p)
    sys.stdout.flush()
    os._exit(0 if ok else 1)


def log_tails(name, n=20):
    out = []
    for path in sorted(glob.glob(os.path.join(harness.LOGROOT, name, "*.log"))):
        try:
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        out.append("  --- %s (last %d of %d lines)" % (os.path.relpath(path, harness.ROOT),
                                                       min(n, len(lines)), len(lines)))
        out.extend("  | " + x for x in lines[-n:])
    return "\n".join(out)


def kill_group(p):
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(wait)
            return
        except subprocess.TimeoutExpired:
            pass


def lock_logs(max_wait=1800):
    """One run at a time per checkout: runs share build/test-logs/<test>/ and
    two cores. Returns the open lock file (keep it open)."""
    os.makedirs(harness.LOGROOT, exist_ok=True)
    f = open(os.path.join(harness.LOGROOT, ".run.lock"), "w")
    deadline = time.monotonic() + max_wait
    said = False
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if not said:
                print("note: another integration run holds %s; waiting for it" % f.name)
                sys.stdout.flush()
                said = True
            if time.monotonic() > deadline:
                print("another run held the lock for %ds; giving up" % max_wait)
                print("0 passed, 1 failed")
                sys.exit(1)
            time.sleep(0.5)


def run_all(tests):
    lock = lock_logs()  # noqa: F841 - held until exit
    passed = failed = 0
    t_all = time.monotonic()
    for path, name, timeout in tests:
        t0 = time.monotonic()
        os.makedirs(os.path.join(harness.LOGROOT, name), exist_ok=True)
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--run-one",
                              "%s::%s" % (path, name)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True, cwd=harness.ROOT)
        try:
            out, _ = p.communicate(timeout=timeout)
            rc = p.returncode
            timed_out = False
        except subprocess.TimeoutExpired:
            kill_group(p)
            out, _ = p.communicate()
            rc = None
            timed_out = True
        else:
            # The test's own children are in its process group; make sure
            # none outlives it.
            kill_group(p)
        dt = time.monotonic() - t0
        text = out.decode("utf-8", "replace").rstrip()
        if rc == 0:
            passed += 1
            print("ok %s (%.1fs)" % (name, dt))
        else:
            failed += 1
            why = "timed out after %ds" % timeout if timed_out else "exit status %s" % rc
            print("FAIL %s (%.1fs, %s)" % (name, dt, why))
            if text:
                print("\n".join("  " + x for x in text.splitlines()[-60:]))
            tails = log_tails(name)
            if tails:
                print(tails)
        sys.stdout.flush()
    print("# integration: %.0fs total" % (time.monotonic() - t_all))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", dest="substr", help="only tests whose name (or file name) contains this")
    ap.add_argument("-l", "--list", action="store_true", help="list tests and exit")
    ap.add_argument("--run-one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run_one:
        path, name = a.run_one.split("::")
        run_one(path, name)
        return 1
    tests = discover()
    if a.substr:
        tests = [t for t in tests if a.substr in t[1] or a.substr in os.path.basename(t[0])]
    if a.list:
        for path, name, timeout in tests:
            print("%s %s (%ds)" % (os.path.basename(path), name, timeout))
        return 0
    if not os.access(harness.BIN, os.X_OK):
        print("note: %s is missing; every test that starts natwrp will fail" % harness.BIN)
    return run_all(tests)


if __name__ == "__main__":
    sys.exit(main())
