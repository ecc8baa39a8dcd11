"""Ages as kubectl prints them; the helpers live in ``storage.api.age`` (the API server prints tables too)."""
from storage.api.age import age, human_duration, object_age, parse_timestamp

__all__ = ["age", "human_duration", "object_age", "parse_timestamp"]
