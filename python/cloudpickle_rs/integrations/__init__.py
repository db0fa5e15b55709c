"""Make the engines that ship Python code pickle with cloudpickle_rs.

Each submodule switches one engine over, in the process that imports (or installs) it:

- ``cloudpickle_rs.integrations.dask``: Dask / distributed (client, scheduler and workers, as a
  Dask preload);
- ``cloudpickle_rs.integrations.ray``: Ray (``install()``, or as a ``worker_process_setup_hook``);
- ``cloudpickle_rs.integrations.loky``: loky and joblib (``LOKY_PICKLER=cloudpickle_rs`` works
  as is; this module adds a counting pickler and the by_source option);
- ``cloudpickle_rs.integrations.executor``: a ``concurrent.futures`` process pool of the standard
  library whose tasks and results travel with cloudpickle_rs;
- ``cloudpickle_rs.integrations.audit``: catches any dump made by *stock* cloudpickle in a process
  (to prove that an engine really routes through cloudpickle_rs).

The ``by_source`` option of every integration defaults to the environment variable
``CLOUDPICKLE_RS_BY_SOURCE`` (``1``/``true``, ``auto``, or ``0``/unset for bytecode), so one
variable covers every process of a deployment.  Nothing is imported until a submodule is.
"""
