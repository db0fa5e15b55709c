"""Type stubs of the extension module `cloudpickle_rs._native` (the Rust pickler)."""
import pickle
import sys
from typing import Any, Callable, Literal, Optional, Protocol, Union

__all__ = [
    "DEFAULT_PROTOCOL",
    "HIGHEST_PROTOCOL",
    "Pickler",
    "PicklerBase",
    "PicklingRecursionError",
    "SourceFallbackWarning",
    "_by_source_value",
    "_set_code_check",
    "dump",
    "dumps",
]

HIGHEST_PROTOCOL: int
DEFAULT_PROTOCOL: int

class _Writer(Protocol):
    def write(self, data: bytes, /) -> Any: ...

_BySource = Union[bool, Literal["auto"], None]

class PicklingRecursionError(pickle.PicklingError, RecursionError):
    """Too deep to pickle: both what cloudpickle raises and what pickle raises."""

class SourceFallbackWarning(UserWarning):
    """by_source='auto' sent a function as bytecode (no usable source)."""

class PicklerBase:
    """`_pickle.Pickler`'s exact semantics (byte for byte), without cloudpickle's by-value layer."""

    fast: bool
    memo: dict[int, tuple[int, Any]]
    def __init__(
        self,
        file: _Writer,
        protocol: Optional[int] = None,
        fix_imports: bool = True,
        buffer_callback: Optional[Callable[[pickle.PickleBuffer], Any]] = None,
        *,
        by_source: _BySource = False,
        pickle_by_reference: Optional[Callable[[Any], bool]] = None,
        reconstructor_module: str = "cloudpickle.cloudpickle",
        target_python: Union[str, tuple[int, ...], None] = None,
        receiver: Optional[Any] = None,
    ) -> None: ...
    def dump(self, obj: Any) -> None: ...
    def clear_memo(self) -> None: ...
    @property
    def bin(self) -> bool: ...
    @property
    def protocol(self) -> int: ...
    # Optional hooks a subclass or an instance may define, as with pickle.Pickler:
    #   persistent_id(obj) -> Any | None, dispatch_table: Mapping[type, Callable]
    if sys.version_info >= (3, 13):
        # As _pickle.Pickler's since 3.13: None for every object (for super() calls).
        def persistent_id(self, obj: Any) -> None: ...

class Pickler(PicklerBase):
    """cloudpickle's pickler: functions, classes and modules that cannot be imported go by value."""

    def reducer_override(self, obj: Any) -> Any: ...

def _set_code_check(check: Callable[[Any, Any], bool]) -> None: ...
def _by_source_value(value: Any) -> Union[bool, Literal["auto"]]:
    """by_source as dumps() and Pickler() read it: True, False or "auto"."""
    ...

def dumps(
    obj: Any,
    protocol: Optional[int] = None,
    buffer_callback: Optional[Callable[[pickle.PickleBuffer], Any]] = None,
    by_source: _BySource = None,
    pickle_by_reference: Optional[Callable[[Any], bool]] = None,
    *,
    fix_imports: bool = True,
    reconstructor_module: str = "cloudpickle.cloudpickle",
    target_python: Union[str, tuple[int, ...], None] = None,
    receiver: Optional[Any] = None,
) -> bytes: ...
def dump(
    obj: Any,
    file: _Writer,
    protocol: Optional[int] = None,
    buffer_callback: Optional[Callable[[pickle.PickleBuffer], Any]] = None,
    by_source: _BySource = None,
    pickle_by_reference: Optional[Callable[[Any], bool]] = None,
    *,
    fix_imports: bool = True,
    reconstructor_module: str = "cloudpickle.cloudpickle",
    target_python: Union[str, tuple[int, ...], None] = None,
    receiver: Optional[Any] = None,
) -> None: ...

