"""``python -m cloudpickle_rs``: look inside a pickle without running it.

    python -m cloudpickle_rs inspect FILE|-  [--json] [--depth N] [--source-lines N]
    python -m cloudpickle_rs deps FILE|-     [--all]

``inspect`` prints the tree of objects a pickle holds, in human terms: each function shipped by
value (name, file and line, whether it travels as source text or as bytecode, its source, the
globals and closure values it carries), classes shipped by value, the modules and globals the
receiver must import, and the size in bytes of each part.  ``--json`` prints the same as JSON.

``deps`` prints the import-level modules the receiver needs (globals referenced by name and
modules a shipped function imports, ``subimport``), mapped to the distributions installed here
that provide them, as requirements lines (``name==version``); standard-library modules and
modules no installed distribution provides are listed as comments.

The pickle is never executed: it is read with ``pickletools.genops`` and replayed on a symbolic
stack (no ``pickle.loads``, no import of anything it names), so it is safe on untrusted input.
cloudpickle's reconstructors (``cloudpickle.cloudpickle`` or Ray's ``ray.cloudpickle.cloudpickle``)
are recognised by name: ``_make_function`` + ``_function_setstate`` (functions),
``_builtin_type('CodeType')`` (bytecode), ``builtins.compile`` of a factory source (by_source),
``_make_skeleton_class``/``_make_skeleton_enum`` + ``_class_setstate`` (classes), ``subimport`` /
``dynamic_subimport`` (modules), ``_make_empty_cell``/``_make_cell`` + ``setattr(cell,
'cell_contents', v)`` (closure cells).

The package, by role: :mod:`.shape` (the stream shape the reader recognises: reconstructor names,
the by_source factory's builtins and helper, one place), :mod:`.nodes` and :mod:`.machine` (the
opcode stack machine, a dispatch table over opcode names), :mod:`.roles` (reconstructor calls
recognised as they are made), :mod:`.analysis` (what the stream holds), :mod:`.render` (text
output), :mod:`.deps` (requirements lines), :mod:`.command` (the command line).
"""
from cloudpickle_rs._cli.analysis import (  # noqa: F401  (the names the package had as one module)
    _callee, _code_info, _compiled, _describe_class, _describe_function, _describe_value,
    _eval_str, _factory_exec, _fn_name, _function_state, _lambda_in, _own_source, _source_line,
    _source_python, _tree, _walk, analyse)
from cloudpickle_rs._cli.command import _check_command, _read, main  # noqa: F401
from cloudpickle_rs._cli.deps import _packages_distributions, _stdlib_names, requirements  # noqa: F401
from cloudpickle_rs._cli.machine import _machine  # noqa: F401
from cloudpickle_rs._cli.nodes import Call, Const, Dict, Global, Node, Opaque, Seq, _const  # noqa: F401
from cloudpickle_rs._cli.render import _fmt_size, _render_tree, render  # noqa: F401
from cloudpickle_rs._cli.roles import _is_compile_fn, on_call as _on_call  # noqa: F401
from cloudpickle_rs._cli.shape import RECONSTRUCTOR_MODULES  # noqa: F401

__all__ = ["analyse", "render", "requirements", "main"]
