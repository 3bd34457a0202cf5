"""The test's own hands on moto's EC2, through boto3 (what an operator or another tool would do):
set up a VPC with foreign routes and instances, read a route table, change it out of band.

    ec2.py ENDPOINT setup [INSTANCES]  -> {"vpc", "table", "subnets": [3], "instances": [..],
                                          "ips": [..], "igw", "pcx"}
        a VPC 172.31.0.0/16 with three subnets in three zones, instances spread over them
        round-robin, and a route table associated with the three, holding foreign routes: the
        default route to an internet gateway and 10.50.0.0/16 to a VPC peering connection.
    ec2.py ENDPOINT instances SUBNET N -> [ids]
    ec2.py ENDPOINT routes TABLE       -> {"DEST": "TARGET", ...}
    ec2.py ENDPOINT delete TABLE DEST
    ec2.py ENDPOINT retarget TABLE DEST INSTANCE
    ec2.py ENDPOINT create TABLE DEST INSTANCE
    ec2.py ENDPOINT source-dest-check INSTANCE -> true | false
    ec2.py ENDPOINT paced-creates VPC INSTANCE N RATE -> {"seconds", "calls"}
        the yardstick of the benchmark: N CreateRoute calls into a scratch table, RATE a second.
"""
import json
import sys
import time

import boto3

endpoint, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint,
                   aws_access_key_id="testing", aws_secret_access_key="testing")


def instances(subnet, count):
    out = []
    while count > 0:
        batch = min(count, 500)
        reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=batch, MaxCount=batch, SubnetId=subnet)
        out += [(i["InstanceId"], i["PrivateIpAddress"]) for i in reservation["Instances"]]
        count -= batch
    return out


if command == "setup":
    count = int(args[0]) if args else 3
    vpc = ec2.create_vpc(CidrBlock="172.31.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"172.31.{16 * z}.0/20", AvailabilityZone=f"us-east-1{az}")["Subnet"]["SubnetId"]
               for z, az in enumerate("abc")]
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    for subnet in subnets:
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    peer = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    pcx = ec2.create_vpc_peering_connection(VpcId=vpc, PeerVpcId=peer)["VpcPeeringConnection"]["VpcPeeringConnectionId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="10.50.0.0/16", VpcPeeringConnectionId=pcx)
    made = [None] * count
    for z, subnet in enumerate(subnets):
        slots = list(range(z, count, 3))
        for slot, instance in zip(slots, instances(subnet, len(slots))):
            made[slot] = instance
    print(json.dumps({"vpc": vpc, "table": table, "subnets": subnets, "instances": [i for i, _ in made],
                      "ips": [ip for _, ip in made], "igw": igw, "pcx": pcx}))
elif command == "instances":
    print(json.dumps([i for i, _ in instances(args[0], int(args[1]))]))
elif command == "routes":
    table = ec2.describe_route_tables(RouteTableIds=[args[0]])["RouteTables"][0]
    out = {}
    for r in table["Routes"]:
        dest = r.get("DestinationCidrBlock") or r.get("DestinationIpv6CidrBlock")
        out[dest] = (r.get("InstanceId") or r.get("NetworkInterfaceId") or r.get("GatewayId")
                     or r.get("VpcPeeringConnectionId") or "?")
    print(json.dumps(out))
elif command == "delete":
    ec2.delete_route(RouteTableId=args[0], DestinationCidrBlock=args[1])
    print("{}")
elif command == "retarget":
    ec2.replace_route(RouteTableId=args[0], DestinationCidrBlock=args[1], InstanceId=args[2])
    print("{}")
elif command == "create":
    ec2.create_route(RouteTableId=args[0], DestinationCidrBlock=args[1], InstanceId=args[2])
    print("{}")
elif command == "source-dest-check":
    answer = ec2.describe_instance_attribute(InstanceId=args[0], Attribute="sourceDestCheck")
    print(json.dumps(answer["SourceDestCheck"]["Value"]))
elif command == "paced-creates":
    vpc, instance, n, rate = args[0], args[1], int(args[2]), float(args[3])
    scratch = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    start = time.monotonic()
    for i in range(n):
        due = start + i / rate
        time.sleep(max(0.0, due - time.monotonic()))
        ec2.create_route(RouteTableId=scratch, DestinationCidrBlock=f"10.200.{i}.0/24", InstanceId=instance)
    print(json.dumps({"seconds": time.monotonic() - start, "calls": n}))
else:
    sys.exit(f"unknown command {command}")
