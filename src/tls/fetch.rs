//! Reads the cluster CA's stored value: Secrets Manager GetSecretValue (`SecretString`) or
//! SSM GetParameter with decryption (a SecureString), with the task role's credentials, in the
//! ARN's region (a secret name: this task's region). The value is returned in a
//! [`Zeroizing`] string and never logged; the SDK's own `Debug` of both outputs redacts it
//! (`SecretString` and `Parameter.Value` are sensitive in the service models).

use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use zeroize::Zeroizing;

use crate::aws::{AwsClients, CountCalls};
use crate::config::CaLocation;
use crate::error::{classify, ErrorKind, SourceError};
use crate::partition::{self, Arn};

/// The IAM action of a Secrets Manager read.
pub const GET_SECRET_VALUE: &str = "secretsmanager:GetSecretValue";
/// The IAM action of an SSM parameter read.
pub const GET_PARAMETER: &str = "ssm:GetParameter";

/// The stored value of `location`, read in `location.region(task_region)`.
///
/// # Errors
///
/// A [`SourceError`] naming the action and the fix: not found (create it, or give the ARN of
/// another region's), AccessDenied (grant the action on the resource ARN in the region's
/// partition, and kms:Decrypt on a customer managed key), a KMS decryption failure, a secret
/// without `SecretString`, a parameter that is not a SecureString, and the SDK's other errors
/// as the sources classify them.
pub(crate) async fn fetch(
    location: &CaLocation,
    task_region: &str,
    clients: &AwsClients,
    calls: &CountCalls,
) -> Result<Zeroizing<String>, SourceError> {
    let region = location.region(task_region);
    match location {
        CaLocation::Secret { id, .. } => secret(id, region, clients, calls).await,
        CaLocation::Parameter { arn, .. } => parameter(arn, region, clients, calls).await,
    }
}

const KMS: &str =
    "and kms:Decrypt on its KMS key when that is a customer managed key (docs/iam.md)";

async fn secret(
    id: &str,
    region: &str,
    clients: &AwsClients,
    calls: &CountCalls,
) -> Result<Zeroizing<String>, SourceError> {
    // A name matches the secret's ARN with Secrets Manager's six random characters after it.
    let arn = match Arn::parse(id) {
        Some(_) => id.to_string(),
        None => partition::arn("secretsmanager", region, "*", &format!("secret:{id}-*")),
    };
    let resource = format!("Resource \"{arn}\", {KMS}");
    let not_found = format!("create the secret {id:?} in {region} (docs/tls.md), or set tls_ca to the ARN of the secret where it is (a name is looked up in this task's region)");
    let out = clients
        .secretsmanager(region)
        .get_secret_value()
        .secret_id(id)
        .customize()
        .interceptor(calls.clone())
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            Some(GetSecretValueError::DecryptionFailure(d)) => SourceError::new(
                ErrorKind::AccessDenied,
                GET_SECRET_VALUE,
                format!("DecryptionFailure: {}", d.message().unwrap_or("KMS could not decrypt the secret")),
            )
            .with_fix(format!("grant kms:Decrypt to the task role on the KMS key of the secret {arn}, and check the key is enabled (docs/iam.md)")),
            _ => classify(e, GET_SECRET_VALUE, &resource, &not_found),
        })?;
    match out.secret_string {
        Some(s) => Ok(Zeroizing::new(s)),
        None => Err(SourceError::new(
            ErrorKind::InvalidRequest,
            GET_SECRET_VALUE,
            format!("the secret {id:?} has no SecretString (it holds SecretBinary)"),
        )
        .with_fix("store the CA certificate and key as text: aws secretsmanager put-secret-value --secret-id ID --secret-string file://ca.pem (docs/tls.md)")),
    }
}

async fn parameter(
    arn: &str,
    region: &str,
    clients: &AwsClients,
    calls: &CountCalls,
) -> Result<Zeroizing<String>, SourceError> {
    let resource = format!("Resource \"{arn}\", {KMS}");
    let name = Arn::parse(arn)
        .and_then(|a| a.resource.strip_prefix("parameter"))
        .unwrap_or(arn);
    let create = format!("aws ssm put-parameter --region {region} --type SecureString --name {name} --value file://ca.pem (docs/tls.md)");
    let out = clients
        .ssm(region)
        .get_parameter()
        .name(arn)
        .with_decryption(true)
        .customize()
        .interceptor(calls.clone())
        .send()
        .await
        .map_err(|e| match e.as_service_error() {
            Some(GetParameterError::ParameterNotFound(_)) => SourceError::new(
                ErrorKind::NotFound,
                GET_PARAMETER,
                format!("ParameterNotFound: there is no parameter {arn}"),
            )
            .with_fix(format!("create it: {create}")),
            Some(GetParameterError::InvalidKeyId(k)) => SourceError::new(
                ErrorKind::AccessDenied,
                GET_PARAMETER,
                format!("InvalidKeyId: {}", k.message().unwrap_or("the parameter's KMS key cannot be used")),
            )
            .with_fix(format!("grant kms:Decrypt to the task role on the KMS key of {arn}, and check the key is enabled (docs/iam.md)")),
            _ => classify(e, GET_PARAMETER, &resource, &format!("create it: {create}")),
        })?;
    let Some(p) = out.parameter else {
        return Err(SourceError::new(
            ErrorKind::Malformed,
            GET_PARAMETER,
            format!("the answer for {arn} holds no parameter"),
        ));
    };
    let kind = p.r#type.as_ref().map(|t| t.as_str().to_string());
    let value = p.value.map(Zeroizing::new);
    if kind.as_deref() != Some("SecureString") {
        return Err(SourceError::new(
            ErrorKind::InvalidRequest,
            GET_PARAMETER,
            format!(
                "the parameter {arn} is a {}, not a SecureString: the CA's private key would be stored unencrypted",
                kind.as_deref().unwrap_or("parameter of no type")
            ),
        )
        .with_fix(format!("delete it and store the CA as a SecureString: {create}")));
    }
    value.ok_or_else(|| {
        SourceError::new(
            ErrorKind::Malformed,
            GET_PARAMETER,
            format!("the parameter {arn} has no value"),
        )
    })
}
