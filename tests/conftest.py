"""Set-up shared by the whole test suite."""
import signal

# A shell starts a background job (`pytest &`, `nohup pytest &`) with SIGINT ignored, and every
# process the tests start inherits that: the tests of what Ctrl-C does would see nothing happen.
# They test Python's own handling of it, so the suite puts that back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
