"""Secrets Manager GetSecretValue and SSM GetParameter, as the cluster CA of TLS distribution is
read (src/tls/fetch.rs): by name and by ARN, per region, SecureString decryption, the
not-found errors, and AccessDenied through /_fault. A test CA is made here with `cryptography`
(a moto dependency); no key material is committed."""
import datetime

import botocore.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def ca_pem():
    """A fresh P-256 CA: its certificate and PKCS#8 key, PEM, concatenated."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "awsemu test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode()
            + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode())


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def test_a_secret_is_read_by_name_and_by_arn_in_its_own_region_only(emu):
    value = ca_pem()
    sm = emu.client("secretsmanager", "eu-west-2")
    arn = sm.create_secret(Name="ecs-peers/ca", SecretString=value)["ARN"]
    assert arn.startswith("arn:aws:secretsmanager:eu-west-2:") and ":secret:ecs-peers/ca-" in arn
    assert sm.get_secret_value(SecretId="ecs-peers/ca")["SecretString"] == value
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == value
    with pytest.raises(botocore.exceptions.ClientError) as e:
        emu.client("secretsmanager", "us-east-1").get_secret_value(SecretId="ecs-peers/ca")
    assert code(e) == "ResourceNotFoundException"


def test_a_securestring_is_decrypted_only_when_asked_and_read_by_arn(emu):
    value = ca_pem()
    ssm = emu.client("ssm", "ap-southeast-2")
    ssm.put_parameter(Name="/ecs-peers/ca", Value=value, Type="SecureString")
    p = ssm.get_parameter(Name="/ecs-peers/ca", WithDecryption=True)["Parameter"]
    assert (p["Type"], p["Value"]) == ("SecureString", value)
    assert p["ARN"].startswith("arn:aws:ssm:ap-southeast-2:") and p["ARN"].endswith(":parameter/ecs-peers/ca")
    assert ssm.get_parameter(Name=p["ARN"], WithDecryption=True)["Parameter"]["Value"] == value
    assert ssm.get_parameter(Name="/ecs-peers/ca", WithDecryption=False)["Parameter"]["Value"] != value
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ssm.get_parameter(Name="/ecs-peers/none", WithDecryption=True)
    assert code(e) == "ParameterNotFound"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        emu.client("ssm", "eu-west-2").get_parameter(Name="/ecs-peers/ca", WithDecryption=True)
    assert code(e) == "ParameterNotFound"


@pytest.mark.parametrize("service,operation,call", [
    ("secretsmanager", "GetSecretValue", lambda c: c.get_secret_value(SecretId="x")),
    ("ssm", "GetParameter", lambda c: c.get_parameter(Name="/x", WithDecryption=True)),
])
def test_access_denied_is_injected_per_operation(emu, service, operation, call):
    emu.ok("POST", "/_fault", {"operation": operation, "status": 400, "code": "AccessDeniedException",
                               "message": "User is not authorized"})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(emu.client(service, "eu-west-2"))
    assert code(e) == "AccessDeniedException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
