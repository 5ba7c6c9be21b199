"""Set-up shared by the whole test suite."""
import signal

import pytest

# A shell starts a background job (`pytest &`, `nohup pytest &`) with SIGINT ignored, and every
# process the tests start inherits that: the tests of what Ctrl-C does would see nothing happen.
# They test Python's own handling of it, so the suite puts that back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _cache_of_the_session(tmp_path_factory):
    """Decoded datasets go to a cache of the session's own, not the user's ``~/.cache/pdnn``
    (nor an inherited ``$PDNN_CACHE``): every checkout the suite runs from is a new place, and each
    left an entry of the demo data there. Set in ``os.environ``, so the commands the tests start
    inherit it; a test that needs another cache sets its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PDNN_CACHE", str(tmp_path_factory.mktemp("pdnn-cache")))
        yield
