"""ServiceAccount admission, as Kubernetes' plugin (the change itself: storage.api.service_account_token)."""
from __future__ import annotations

from typing import Any

from storage.api.service_account_token import with_service_account
from storage.apiserver.admission import AdmissionRequest


class ServiceAccountAdmission:
    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        if req.operation != "CREATE" or req.resource.plural != "pods":
            return req.obj
        return with_service_account(req.store, req.obj)
