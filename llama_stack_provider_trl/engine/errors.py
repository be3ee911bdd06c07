"""Why the engine refuses a request, in no front door's terms: each front door answers a RequestError in its own
API's error shape (the 0.6.1 face through stack_api's classes) with this status code."""

from http import HTTPStatus


class RequestError(Exception):
    """A request the engine will not run. The message names the request field and says how to fix it."""

    def __init__(self, field: str, problem: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.status = status
