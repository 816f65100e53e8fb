"""synth-engine: synthetic instruction data from OpenAI-compatible endpoints, at the endpoint's limit.

The public API is exactly ``__all__``; everything else may change without notice.
"""

from __future__ import annotations

from .api import Engine as Engine
from .api import Row as Row
from .api import RunResult as RunResult
from .config import Config as Config
from .config import load_config as load_config
from .errors import AuthError as AuthError
from .errors import BadRequest as BadRequest
from .errors import BudgetExceeded as BudgetExceeded
from .errors import ConfigError as ConfigError
from .errors import ConnectionLost as ConnectionLost
from .errors import EndpointError as EndpointError
from .errors import EngineError as EngineError
from .errors import FatalEndpointError as FatalEndpointError
from .errors import InputError as InputError
from .errors import MalformedResponse as MalformedResponse
from .errors import ParseError as ParseError
from .errors import RateLimited as RateLimited
from .errors import RetryableError as RetryableError
from .errors import ServerError as ServerError
from .errors import ShardError as ShardError
from .errors import Timeout as Timeout
from .methods.custom import Context as Context
from .methods.custom import Failed as Failed
from .methods.custom import Kept as Kept
from .methods.custom import Method as Method
from .methods.custom import MethodConfig as MethodConfig
from .methods.custom import Rejected as Rejected
from .methods.custom import TypedRow as TypedRow
from .records import Item as Item
from .version import __version__ as __version__

__all__ = (
    "AuthError",
    "BadRequest",
    "BudgetExceeded",
    "Config",
    "ConfigError",
    "ConnectionLost",
    "Context",
    "EndpointError",
    "Engine",
    "EngineError",
    "Failed",
    "FatalEndpointError",
    "InputError",
    "Item",
    "Kept",
    "MalformedResponse",
    "Method",
    "MethodConfig",
    "ParseError",
    "RateLimited",
    "Rejected",
    "RetryableError",
    "Row",
    "RunResult",
    "ServerError",
    "ShardError",
    "Timeout",
    "TypedRow",
    "__version__",
    "load_config",
)
