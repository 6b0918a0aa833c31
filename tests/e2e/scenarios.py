"""The one scenario runner of the end-to-end tests: each scenario or check prints one line,
`PASS <name> (<seconds>s) <detail>` or `FAIL <name>: <error>` with a short traceback, and a
failure is reported and the run goes on; `summary()` prints `N passed, N failed in T s` and
returns the exit status (non-zero when any failed)."""
import time
import traceback


class Scenarios:
    def __init__(self, trace_limit=3):
        self.results = []
        self.trace_limit = trace_limit
        self.started = time.monotonic()

    def run(self, name, fn, *args, describe=None):
        """Runs `fn(*args)` as the scenario `name`. Its value is returned (None when it failed);
        its detail on the PASS line is `describe(value)`, else the value when it is a string."""
        t0 = time.monotonic()
        try:
            value = fn(*args)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            self.results.append(False)
            print(f"FAIL {name}: {e}", flush=True)
            traceback.print_exc(limit=self.trace_limit)
            return None
        detail = describe(value) if describe else (value if isinstance(value, str) else "")
        self.results.append(True)
        print(f"PASS {name} ({time.monotonic() - t0:.1f}s) {detail}".rstrip(), flush=True)
        return value

    __call__ = run

    def check(self, name, ok, detail):
        """A check whose outcome was worked out elsewhere (e.g. over a whole soak)."""
        self.results.append(bool(ok))
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    @property
    def failed(self):
        return self.results.count(False)

    def summary(self):
        """Prints the totals; returns the exit status: 1 when any scenario failed (or none ran)."""
        passed = self.results.count(True)
        print(f"{passed} passed, {self.failed} failed in {time.monotonic() - self.started:.1f}s", flush=True)
        return 1 if self.failed or not self.results else 0
