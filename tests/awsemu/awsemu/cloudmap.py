"""Cloud Map (servicediscovery) where stock moto 5.2.5 differs from AWS.

- RegisterInstance with an InstanceId the service already has *updates* that instance (AWS:
  "If the service already contains an instance with the specified InstanceId, RegisterInstance
  updates it", https://docs.aws.amazon.com/cloud-map/latest/api/API_RegisterInstance.html);
  moto appends a second instance with the same id. Whether AWS resets a custom health status on
  re-registration is not documented; awsemu keeps it.
- DiscoverInstances' HealthStatus filter "is ignored for services that don't have a health check
  configured, and all instances are returned"
  (https://docs.aws.amazon.com/cloud-map/latest/api/API_DiscoverInstances.html); moto applies it
  to every service. With a health check configured the filter is moto's (HEALTHY, UNHEALTHY,
  ALL, HEALTHY_OR_ELSE_ALL). Without HealthStatus moto returns ALL; AWS's default is not stated
  in the API reference.
- UpdateInstanceCustomHealthStatus needs a service with HealthCheckCustomConfig (AWS answers
  CustomHealthNotFound otherwise); moto accepts it for any service.
- `POST /_emu/cloudmap-health {"region", "namespace", "service", "instance", "status"}` sets an
  instance's health as a Route 53 health check or a custom health update would (the service must
  have HealthCheckConfig or HealthCheckCustomConfig, as discovery ignores health otherwise).
- RegisterInstance checks the attributes a service's DNS records need, as AWS documents them
  (https://docs.aws.amazon.com/cloud-map/latest/api/API_RegisterInstance.html): an A record
  needs AWS_INSTANCE_IPV4, an AAAA record AWS_INSTANCE_IPV6 (A and AAAA: either), an SRV record
  AWS_INSTANCE_PORT and an address, a CNAME record AWS_INSTANCE_CNAME; moto accepts anything.
  AWS answers InvalidInput; its exact words are not documented. A service without DNS records
  (an HTTP namespace) takes custom attributes only, as AWS does.
- Namespaces shared through AWS RAM: moto has no RAM and ignores DiscoverInstances'
  OwnerAccount. `POST /_emu/cloudmap-share {"region", "namespace", "owner"}` makes a namespace
  one that account `owner` owns and shares with the emulator's account (its ARN names the
  owner). DiscoverInstances then finds a namespace only when OwnerAccount names its owner; an
  absent OwnerAccount means the caller's own account. AWS says "For instances associated with
  namespaces that are shared with your account, you must specify an OwnerAccount"
  (https://docs.aws.amazon.com/cloud-map/latest/api/API_DiscoverInstances.html) but not what it
  answers without one: awsemu assumes NamespaceNotFound, as for a namespace that does not exist.
"""
from moto.servicediscovery import models as sd_models
from moto.servicediscovery import responses as sd_responses
from moto.servicediscovery.exceptions import CustomHealthNotFound, InvalidInput, NamespaceNotFound

from . import state

B = sd_models.ServiceDiscoveryBackend
R = sd_responses.ServiceDiscoveryResponse

# (region, namespace id) -> the account that owns the namespace and shares it with ACCOUNT.
_SHARED = {}


@state.on_reset
def _forget_shares():
    _SHARED.clear()


def _has_health_check(service):
    return bool(service.health_check_config or service.health_check_custom_config)


def _check_dns_attributes(service, attributes):
    """InvalidInput unless the attributes hold what the service's DNS records need."""
    records = {r.get("Type") for r in ((service.dns_config or {}).get("DnsRecords") or [])}
    has = lambda k: bool(attributes.get(k))  # noqa: E731
    address = has("AWS_INSTANCE_IPV4") or has("AWS_INSTANCE_IPV6")
    missing = []
    if records & {"A", "AAAA"} and not address:
        missing.append("AWS_INSTANCE_IPV4" if "A" in records else "AWS_INSTANCE_IPV6")
    if "SRV" in records:
        if not has("AWS_INSTANCE_PORT"):
            missing.append("AWS_INSTANCE_PORT")
        if not address and not missing:
            missing.append("AWS_INSTANCE_IPV4")
    if "CNAME" in records and not has("AWS_INSTANCE_CNAME"):
        missing.append("AWS_INSTANCE_CNAME")
    if missing:
        raise InvalidInput(f"the service's DNS records ({', '.join(sorted(records))}) need the attribute(s) "
                           f"{', '.join(missing)}")


def register_instance(self, service_id, instance_id, creator_request_id, attributes):
    service = self.get_service(service_id)
    _check_dns_attributes(service, attributes or {})
    for inst in service.instances:
        if inst.instance_id == instance_id:
            inst.attributes = attributes if attributes else {}
            if creator_request_id:
                inst.creator_request_id = creator_request_id
            service.instances_revision[instance_id] = service.instances_revision.get(instance_id, 0) + 1
            return self._create_operation("REGISTER_INSTANCE", targets={"INSTANCE": instance_id})
    return _stock_register(self, service_id, instance_id, creator_request_id, attributes)


def update_instance_custom_health_status(self, service_id, instance_id, status):
    service = self.get_service(service_id)
    if not service.health_check_custom_config:
        raise CustomHealthNotFound(service_id)
    return _stock_update_health(self, service_id, instance_id, status)


def _filter_instances(self, instances, query_parameters=None, optional_parameters=None, health_status=None):
    if instances:
        service = self.get_service(instances[0].service_id)
        if not _has_health_check(service):
            health_status = "ALL"
    return _stock_filter(self, instances, query_parameters, optional_parameters, health_status)


def discover_instances_response(self):
    """DiscoverInstances with OwnerAccount: only the namespaces that account owns (shared ones
    are owned by their owner, the rest by the emulator's account)."""
    import json

    params = json.loads(self.body or "{}")
    name = params.get("NamespaceName")
    asked = params.get("OwnerAccount") or state.ACCOUNT
    backend = self.servicediscovery_backend
    owners = [_SHARED.get((backend.region_name, ns.id), state.ACCOUNT)
              for ns in backend.list_namespaces() if ns.name == name]
    if owners and asked not in owners:
        raise NamespaceNotFound(name)
    return _stock_discover_response(self)


_stock_register = B.register_instance
_stock_update_health = B.update_instance_custom_health_status
_stock_filter = B._filter_instances
_stock_discover_response = R.discover_instances


def install():
    B.register_instance = register_instance
    B.update_instance_custom_health_status = update_instance_custom_health_status
    B._filter_instances = _filter_instances
    R.discover_instances = discover_instances_response


def share(body):
    """The /_emu/cloudmap-share control: returns {"namespace", "arn", "owner"}."""
    for key in ("region", "namespace", "owner"):
        if key not in body:
            raise state.EmuError(f"/_emu/cloudmap-share: missing \"{key}\"")
    owner = str(body["owner"])
    if len(owner) != 12 or not owner.isdigit() or owner == state.ACCOUNT:
        raise state.EmuError(f"/_emu/cloudmap-share: owner {owner!r} is not another 12-digit account id "
                             f"(the emulator's own is {state.ACCOUNT})")
    sd = state.servicediscovery(body["region"])
    ns = [n for n in sd.list_namespaces() if n.name == body["namespace"]]
    if not ns:
        raise state.EmuError(f"/_emu/cloudmap-share: no namespace {body['namespace']!r} in {body['region']}")
    _SHARED[(body["region"], ns[0].id)] = owner
    ns[0].arn = ns[0].arn.replace(f":{state.ACCOUNT}:", f":{owner}:")
    return {"namespace": ns[0].name, "arn": ns[0].arn, "owner": owner}


def set_health(body):
    """The /_emu/cloudmap-health control: returns {"instance", "status"}."""
    for key in ("region", "namespace", "service", "instance", "status"):
        if key not in body:
            raise state.EmuError(f"/_emu/cloudmap-health: missing \"{key}\"")
    if body["status"] not in ("HEALTHY", "UNHEALTHY", "UNKNOWN"):
        raise state.EmuError(f"/_emu/cloudmap-health: status {body['status']!r}; expected HEALTHY, UNHEALTHY or UNKNOWN")
    sd = state.servicediscovery(body["region"])
    ns = [n for n in sd.list_namespaces() if n.name == body["namespace"]]
    if not ns:
        raise state.EmuError(f"/_emu/cloudmap-health: no namespace {body['namespace']!r} in {body['region']}")
    svc = [s for s in sd.list_services() if s.name == body["service"] and s.namespace_id == ns[0].id]
    if not svc:
        raise state.EmuError(f"/_emu/cloudmap-health: no service {body['service']!r} in namespace {body['namespace']!r}")
    if not _has_health_check(svc[0]):
        raise state.EmuError(f"/_emu/cloudmap-health: service {body['service']!r} has no health check configured "
                             "(create it with HealthCheckCustomConfig or HealthCheckConfig); "
                             "DiscoverInstances would ignore the status")
    for inst in svc[0].instances:
        if inst.instance_id == body["instance"]:
            inst.health_status = body["status"]
            return {"instance": inst.instance_id, "status": inst.health_status}
    raise state.EmuError(f"/_emu/cloudmap-health: no instance {body['instance']!r} in service {body['service']!r}")
