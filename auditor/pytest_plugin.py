"""Old module path of the pytest plugin (``-p auditor.pytest_plugin``): the same module object."""

import sys

from auditor.sources import pytest_plugin as _plugin

sys.modules[__name__] = _plugin
