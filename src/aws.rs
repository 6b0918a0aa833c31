//! AWS clients: one credential chain for all, one client per service and region, and two
//! interceptors: one counts real API attempts per operation, one strips the Cloud Map data-plane
//! host prefix when an endpoint override (an emulator) is in use.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::config::Config;

/// Shared SDK configuration and per-region clients.
#[derive(Debug)]
pub(crate) struct AwsClients {
    base: SdkConfig,
    endpoint_override: bool,
    ecs: Mutex<HashMap<String, aws_sdk_ecs::Client>>,
    cloudmap: Mutex<HashMap<String, aws_sdk_servicediscovery::Client>>,
    ec2: Mutex<HashMap<String, aws_sdk_ec2::Client>>,
}

impl AwsClients {
    /// Loads the default credential chain once (env, profile, ECS container credentials, IMDS).
    pub(crate) async fn load(config: &Config) -> Self {
        let first_region = config
            .sources
            .iter()
            .map(|s| s.region())
            // `cluster = "auto"` without a region is no region yet (resolved at its first poll).
            .find(|r| *r != crate::config::AUTO)
            .unwrap_or("us-east-1")
            .to_string();
        // A single stalled call ends in the SDK a little before the poller's own poll_timeout,
        // so the error names the AWS action that stalled rather than only "poll".
        let call_timeout = config
            .poll_timeout
            .saturating_sub((config.poll_timeout / 10).min(Duration::from_secs(1)));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // Every client sets its own region; this only spares the region chain an IMDS probe.
            .region(Region::new(first_region))
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3).min(call_timeout))
                    .operation_attempt_timeout(Duration::from_secs(10).min(call_timeout))
                    .operation_timeout(call_timeout)
                    .build(),
            );
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let base = loader.load().await;
        let endpoint_override = base.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_SERVICEDISCOVERY").is_some();
        AwsClients {
            base,
            endpoint_override,
            ecs: Mutex::default(),
            cloudmap: Mutex::default(),
            ec2: Mutex::default(),
        }
    }

    /// The ECS client for a region (shared by every source in that region).
    pub(crate) fn ecs(&self, region: &str) -> aws_sdk_ecs::Client {
        let mut clients = self.ecs.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let conf = aws_sdk_ecs::config::Builder::from(&self.base)
                    .region(Region::new(region.to_string()))
                    .build();
                aws_sdk_ecs::Client::from_conf(conf)
            })
            .clone()
    }

    /// The EC2 client for a region (ECS on EC2: instance addresses), shared in that region.
    pub(crate) fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let mut clients = self.ec2.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let conf = aws_sdk_ec2::config::Builder::from(&self.base)
                    .region(Region::new(region.to_string()))
                    .build();
                aws_sdk_ec2::Client::from_conf(conf)
            })
            .clone()
    }

    /// A Secrets Manager client for a region (the cluster CA of TLS distribution; built per
    /// read, a few times a day).
    pub(crate) fn secretsmanager(&self, region: &str) -> aws_sdk_secretsmanager::Client {
        let conf = aws_sdk_secretsmanager::config::Builder::from(&self.base)
            .region(Region::new(region.to_string()))
            .build();
        aws_sdk_secretsmanager::Client::from_conf(conf)
    }

    /// An SSM client for a region (the cluster CA as a SecureString parameter; built per read).
    pub(crate) fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        let conf = aws_sdk_ssm::config::Builder::from(&self.base)
            .region(Region::new(region.to_string()))
            .build();
        aws_sdk_ssm::Client::from_conf(conf)
    }

    /// The Cloud Map client for a region (shared by every source in that region).
    pub(crate) fn cloudmap(&self, region: &str) -> aws_sdk_servicediscovery::Client {
        let mut clients = self.cloudmap.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let mut conf = aws_sdk_servicediscovery::config::Builder::from(&self.base)
                    .region(Region::new(region.to_string()));
                if self.endpoint_override {
                    conf = conf.interceptor(StripDataPrefix);
                }
                aws_sdk_servicediscovery::Client::from_conf(conf.build())
            })
            .clone()
    }
}

/// DiscoverInstances is a data-plane call: the SDK prefixes the endpoint host with `data-`
/// (`data-servicediscovery.<region>.amazonaws.com`). With an endpoint override such as
/// `http://127.0.0.1:5000` that gives `data-127.0.0.1`, which does not resolve, and the Rust SDK
/// has no switch to turn the prefix off. So, only when an override is set, take it off again.
#[derive(Debug)]
struct StripDataPrefix;

impl Intercept for StripDataPrefix {
    fn name(&self) -> &'static str {
        "StripDataPrefix"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let uri = context.request().uri();
        let stripped = ["http://data-", "https://data-"].iter().find_map(|p| {
            uri.strip_prefix(p)
                .map(|rest| format!("{}{rest}", &p[..p.len() - 5]))
        });
        if let Some(uri) = stripped {
            context.request_mut().set_uri(uri)?;
        }
        Ok(())
    }
}

/// Counts API attempts (retries included) per operation, e.g. `ecs:ListTasks`.
#[derive(Debug, Default)]
pub(crate) struct CallCounter {
    by_action: Mutex<BTreeMap<String, u64>>,
}

impl CallCounter {
    /// The cumulative counts.
    pub(crate) fn totals(&self) -> BTreeMap<String, u64> {
        self.by_action
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, action: String) {
        *self
            .by_action
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(action)
            .or_default() += 1;
    }
}

/// The interceptor that feeds a [`CallCounter`]; attach it per operation with `customize()`.
#[derive(Debug, Clone)]
pub(crate) struct CountCalls(pub(crate) Arc<CallCounter>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let action = match cfg.load::<Metadata>() {
            Some(m) => format!("{}:{}", iam_prefix(m.service()), m.name()),
            None => "unknown".into(),
        };
        self.0.record(action);
        Ok(())
    }
}

/// The IAM prefix of an SDK service name (`ECS` → `ecs`, `ServiceDiscovery` → `servicediscovery`).
fn iam_prefix(service: &str) -> String {
    service.to_ascii_lowercase().replace(' ', "")
}
