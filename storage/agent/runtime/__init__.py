"""The pod runtime: containers as isolated host processes (runc, overlay of the host's /)."""
from .envvars import EnvError, EnvSources, StaticEnvSources
from .deadline import StopDeadline
from .pod import ContainersNotStopped
from .runtime import PodRuntime

__all__ = ["ContainersNotStopped", "EnvError", "EnvSources", "PodRuntime", "StaticEnvSources", "StopDeadline"]
