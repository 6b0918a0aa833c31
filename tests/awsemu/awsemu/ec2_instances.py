"""EC2 as ECS sees it: addresses from subnets, DNS names, ENIs for tasks, and container instances.

Addresses. AWS hands out addresses of a subnet's CIDR except the first four and the last
(https://docs.aws.amazon.com/vpc/latest/userguide/subnet-sizing.html, for IPv4 and IPv6 alike).
Stock moto picks random ones (10.x.y.z for ECS tasks, whatever the subnet); here every ENI without
an explicit address gets the next free one of its subnet from the 5th address on (subnet
10.1.0.0/24: 10.1.0.4, .5, ...; fd00:1::/64: fd00:1::4, ...). Addresses given explicitly (an EC2
instance's PrivateIpAddress) are marked used so tasks never get them. `POST /moto-api/reset`
restarts the count.

DNS names (https://docs.aws.amazon.com/vpc/latest/userguide/vpc-dns.html, "IP-based naming"):
us-east-1 names `ip-10-1-0-4.ec2.internal`, every other region `ip-10-1-0-4.<region>.compute.internal`.
Stock moto names every ENI `...ec2.internal`.
"""
import ipaddress

import moto.ec2.models.elastic_network_interfaces as eni_mod

from . import state

_stock_random_private_ip = eni_mod.random_private_ip
_next = {}  # CIDR -> host index to try next
_used = {}  # CIDR -> set of addresses in use


@state.on_reset
def _reset():
    _next.clear()
    _used.clear()


def mark_used(cidr, ip):
    if cidr and ip:
        with state.LOCK:
            _used.setdefault(str(ipaddress.ip_network(cidr, strict=False)), set()).add(str(ipaddress.ip_address(ip)))


def allocate(cidr):
    """The next free address of cidr (IPv4 or IPv6) from its 5th address on; raises when full."""
    net = ipaddress.ip_network(cidr, strict=False)
    key = str(net)
    with state.LOCK:
        used = _used.setdefault(key, set())
        i = _next.get(key, 4)
        last = net.num_addresses - 2  # the last address is reserved too
        while i <= last:
            ip = str(net.network_address + i)
            i += 1
            if ip not in used:
                used.add(ip)
                _next[key] = i
                return ip
    raise state.EmuError(f"subnet {cidr} has no free address left (awsemu allocates from the 5th address on)")


def _random_private_ip(cidr=None, ipv6=False):
    # moto calls this for every ENI without an explicit address (and for IPv6 address counts).
    if cidr is None:
        return _stock_random_private_ip(cidr, ipv6)
    return allocate(cidr)


eni_mod.random_private_ip = _random_private_ip

_stock_eni_init = eni_mod.NetworkInterface.__init__


def _eni_init(self, *args, **kwargs):
    _stock_eni_init(self, *args, **kwargs)
    sub = self.subnet
    if sub is not None and getattr(sub, "cidr_block", None) and self.private_ip_address:
        try:
            mark_used(sub.cidr_block, self.private_ip_address)
        except ValueError:
            pass


eni_mod.NetworkInterface.__init__ = _eni_init


def dns_name(region, ip):
    """The IP-based private DNS name AWS gives an IPv4 address in region."""
    host = "ip-" + ip.replace(".", "-")
    if region == "us-east-1":
        return f"{host}.ec2.internal"
    return f"{host}.{region}.compute.internal"


def resource_dns_name(region, resource_id):
    """A resource-based name (`<id>.<region>.compute.internal`), used for IPv6-only ENIs.

    IPv6-only subnets support only resource-based naming (vpc-dns.html). AWS documents it for EC2
    instances (`i-0123456789abcdef0.us-east-2.compute.internal`); which name AWS reports in a
    Fargate/awsvpc task's `privateDnsName` in an IPv6-only subnet is not documented: awsemu
    uses the ENI's id in that form, an assumption.
    """
    if region == "us-east-1":
        return f"{resource_id}.ec2.internal"
    return f"{resource_id}.{region}.compute.internal"


def subnet_info(region, subnet_id):
    """{"id", "az", "ipv4_cidr" (None if IPv6-only), "ipv6_cidr" (None if IPv4-only), "vpc"}."""
    sub = state.ec2(region).get_subnet(subnet_id)
    v6 = None
    for assoc in (getattr(sub, "ipv6_cidr_block_associations", None) or {}).values():
        v6 = assoc.get("ipv6CidrBlock") or v6
    ipv6_native = bool(getattr(sub, "ipv6_native", False))
    return {
        "id": sub.id,
        "az": sub.availability_zone,
        "ipv4_cidr": None if ipv6_native else sub.cidr_block,
        "ipv6_cidr": v6,
        "vpc": sub.vpc_id,
    }


def create_task_eni(region, subnet_id, security_groups):
    """An ENI for an awsvpc task: its addresses from the subnet (IPv4 unless the subnet is
    IPv6-only, IPv6 when the subnet has an IPv6 CIDR). Returns a dict of what ECS reports."""
    info = subnet_info(region, subnet_id)
    v4 = allocate(info["ipv4_cidr"]) if info["ipv4_cidr"] else None
    v6 = allocate(info["ipv6_cidr"]) if info["ipv6_cidr"] else None
    ec2 = state.ec2(region)
    kwargs = {"ipv6_addresses": [v6]} if v6 else {}
    # moto needs some IPv4 address on every ENI; for an IPv6-only subnet it makes up one (10.x)
    # that awsemu never reports.
    eni = ec2.create_network_interface(subnet=subnet_id, private_ip_address=v4, group_ids=security_groups or [],
                                       description="awsemu ECS task", **kwargs)
    eni.status = "in-use"
    if v4:
        name = dns_name(region, v4)
    else:
        name = resource_dns_name(region, eni.id)
    eni.private_dns_name = name
    return {
        "eni_id": eni.id,
        "mac": eni.mac_address,
        "ipv4": v4,
        "ipv6": v6,
        "dns": name,
        "subnet": info,
    }


def delete_task_eni(region, eni_id):
    try:
        state.ec2(region).delete_network_interface(eni_id)
    except Exception:  # already gone (e.g. after a reset): nothing to free
        pass


def instance_addresses(region, ec2_instance_id):
    """{"ipv4", "ipv6", "dns", "az", "subnet", "vpc"} of an EC2 instance (its primary ENI)."""
    inst = state.ec2(region).get_instance(ec2_instance_id)
    nic = inst.nics[0]
    v6 = nic.ipv6_addresses[0] if nic.ipv6_addresses else None
    v4 = nic.private_ip_address
    return {
        "ipv4": v4,
        "ipv6": v6,
        "dns": dns_name(region, v4) if v4 else None,
        "az": inst.placement if isinstance(getattr(inst, "placement", None), str) else inst.availability_zone,
        "subnet": nic.subnet.id if nic.subnet is not None else None,
        "vpc": nic.subnet.vpc_id if nic.subnet is not None else None,
    }
