"""S3 credentials from boto3's usual sources, found when storage is first used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from obstore.store import S3Credential


class Boto3Chain:
    """obstore's credential provider over boto3's chain (environment, its files, SSO, roles),
    refreshed as the credentials expire.

    obstore's own ``Boto3CredentialProvider`` walks the chain as it is made, and the chain ends at
    the instance-metadata service: outside a cloud, that is seconds of timeouts before a worker or
    API could start, and a start-up that storage being away would hold up. Here the chain is walked
    on the first request, where a failure is that request's storage error.
    """

    def __init__(self, session: Any) -> None:
        self._session = session
        self._provider: Any = None

    def __call__(self) -> S3Credential:
        if self._provider is None:
            from obstore.auth.boto3 import Boto3CredentialProvider

            try:
                self._provider = Boto3CredentialProvider(self._session)
            except ValueError as exc:
                raise PermissionError(
                    "no S3 credentials: set TTSD_S3_ACCESS_KEY and TTSD_S3_SECRET_KEY, or give boto3 a source"
                ) from exc
        credential: S3Credential = self._provider()
        return credential
