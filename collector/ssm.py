"""Settings held in AWS Systems Manager: the `.env` text of an SSM parameter, decrypted.

Read at start when COLLECTOR_SSM_PARAMETER is set, and by `collector fetch-env` at deployment.
Credentials and region come from the usual chain (instance role, AWS_* variables).
"""

from __future__ import annotations

from collector.exceptions import ConfigError

__all__ = ["fetch_parameter"]


def fetch_parameter(name: str, region: str | None = None) -> str:
    """A decrypted SSM parameter's value. Raises ConfigError that says what to do."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        client = boto3.client("ssm", region_name=region)
        return str(client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        where = f"in {client.meta.region_name}"
        if code == "ParameterNotFound":
            raise ConfigError(
                [
                    f"SSM parameter {name!r} does not exist {where}; create it with `aws ssm put-parameter "
                    "--type SecureString` or fix COLLECTOR_SSM_PARAMETER"
                ]
            ) from exc
        if code in ("AccessDeniedException", "AccessDenied") or "KMS" in code:
            raise ConfigError(
                [
                    f"not allowed to read SSM parameter {name!r} {where} ({code}); grant "
                    "ssm:GetParameter on it and kms:Decrypt on its key to this machine's role"
                ]
            ) from exc
        raise ConfigError([f"reading SSM parameter {name!r} failed: {code} {exc}"]) from exc
    except NoCredentialsError as exc:
        raise ConfigError(
            [f"no AWS credentials to read SSM parameter {name!r}; attach an instance role"]
        ) from exc
    except BotoCoreError as exc:
        raise ConfigError([f"cannot read SSM parameter {name!r}: {exc}"]) from exc
