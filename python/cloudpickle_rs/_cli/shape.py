"""The stream shape the reader recognises, in one place.

Everything the CLI's reader (:mod:`.roles`, :mod:`.analysis`) knows about how cloudpickle and
cloudpickle_rs lay a stream out is named here: the reconstructor modules and functions, the
builtins a by_source factory is built and run with, the receiver's compile helper and its
padding, the name a factory assigns its result to, and the marker of a factory's minimum Python.
``tests/integrations/test_integ_cli_shape.py`` checks these against real dumps.
"""
import re

#: Modules whose globals are cloudpickle's reconstructors (stock cloudpickle, Ray's vendored copy).
RECONSTRUCTOR_MODULES = ("cloudpickle.cloudpickle", "ray.cloudpickle.cloudpickle",
                         "cloudpickle.cloudpickle_fast", "ray.cloudpickle.cloudpickle_fast")

# Reconstructor function names (globals of RECONSTRUCTOR_MODULES) and the role of their calls.
MAKE_FUNCTION = "_make_function"            # _make_function(code, globals, name, argdefs, closure)
SETSTATE = ("_function_setstate", "_class_setstate")  # (target, state): state of a function/class
MAKE_CLASS = "_make_skeleton_class"          # (type_constructor, name, bases, type_kwargs, id, extra)
MAKE_ENUM = "_make_skeleton_enum"            # (bases, name, qualname, members, module, id, extra)
SUBIMPORT = ("subimport", "dynamic_subimport")  # (module name, ...): a module by reference
BUILTIN_TYPE = "_builtin_type"               # _builtin_type('CodeType'): bytecode
CODE_TYPE = "CodeType"
MAKE_CELL = ("_make_empty_cell", "_make_cell")  # closure cells; _make_cell(value)
MAKE_CELL_WITH_VALUE = "_make_cell"

#: Positional arguments of _make_function / _make_skeleton_enum the reader takes apart.
FUNCTION_CLOSURE_ARG = 4
CLASS_NAME_ARG, CLASS_BASES_ARG, CLASS_KWARGS_ARG = 1, 2, 3
ENUM_BASES_ARG, ENUM_NAME_ARG, ENUM_QUALNAME_ARG, ENUM_MODULE_ARG = 0, 1, 2, 4

#: A cell's value set after it is made: ``setattr(cell, 'cell_contents', value)``.
CELL_CONTENTS = "cell_contents"

# Builtins of the stream (module, name).
BUILTINS = "builtins"
COMPILE = "compile"   # compile(source, filename, 'exec'): a by_source factory's code
EXEC = "exec"         # exec(code, namespace): runs a factory in the stream's namespace dict
SETATTR = "setattr"
GETATTR = "getattr"   # getattr('', 'join')(parts): a factory text from its pieces
SLICE = "slice"
JOIN = "join"

#: ``getitem`` globals (a slice of a string; the receiver's compile helper out of a dict).
GETITEM = ("_operator.getitem", "operator.getitem")
#: Stdlib string operations the reader evaluates (padding such as ``add(mul('\n', k), text)``).
STR_OPS = {("_operator", "add"), ("operator", "add"), ("_operator", "concat"),
           ("operator", "concat"), ("_operator", "mul"), ("operator", "mul")}
#: copyreg's reconstructors of plain instances.
COPYREG_MODULES = ("copyreg", "copy_reg")
COPYREG_NEWOBJ = ("__newobj__", "__newobj_ex__")
COPYREG_RECONSTRUCTOR = "_reconstructor"

#: The receiver's compile helper, taken out of a dict by this key:
#: ``getitem(d, HELPER_NAME)(key, filename, head, padding, body)``.
HELPER_NAME = "__cloudpickle_rs_compile__"
#: Argument positions of a helper call: filename, head text, padding (a line count), body text.
HELPER_FILE_ARG, HELPER_HEAD_ARG, HELPER_PAD_ARG, HELPER_BODY_ARG = 1, 2, 3, 4
#: As function_source::stream::padding_text writes the padding: a string literal from this many lines on, else newlines.
PADDING_AS_STRING = 16

#: The name a by_source factory assigns the function (or lambda) it builds to.
FACTORY_RESULT = "__function_source_result__"
#: How a factory gives a lambda its free variables: the lambda (kept at its original line and
#: column) is the body of a wrapper lambda called at once, ``RESULT = ((lambda k=None: <lambda>)())``.
CLOSURE_WRAPPER = "((lambda {free}=None: <lambda>)())"

#: A by_source factory that needs more than the oldest receiver marks it with this line.
REQUIRES = re.compile(r"^# cloudpickle-rs: requires Python (\d+)\.(\d+)\+$", re.M)
OLDEST_RECEIVER = (3, 8)

#: ``CodeType(...)`` takes this many arguments on 3.11+ (co_qualname, co_exceptiontable); fewer on
#: 3.8-3.10.
CODE_ARGS_311 = 18
