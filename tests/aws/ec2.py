"""The test's own hands on moto's EC2, through boto3 (what an operator or another tool would do):
set up a VPC with foreign routes and instances, read a route table, change it out of band.

    ec2.py ENDPOINT setup             -> {"vpc", "table", "instances": [..], "igw"}
    ec2.py ENDPOINT routes TABLE      -> {"DEST": "TARGET", ...}
    ec2.py ENDPOINT delete TABLE DEST
    ec2.py ENDPOINT retarget TABLE DEST INSTANCE
"""
import json
import sys

import boto3

endpoint, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint,
                   aws_access_key_id="testing", aws_secret_access_key="testing")

if command == "setup":
    vpc = ec2.create_vpc(CidrBlock="172.31.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="172.31.1.0/24")["Subnet"]["SubnetId"]
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=3, MaxCount=3, SubnetId=subnet)
    instances = sorted(i["InstanceId"] for i in reservation["Instances"])
    print(json.dumps({"vpc": vpc, "table": table, "instances": instances, "igw": igw}))
elif command == "routes":
    table = ec2.describe_route_tables(RouteTableIds=[args[0]])["RouteTables"][0]
    out = {}
    for r in table["Routes"]:
        dest = r.get("DestinationCidrBlock") or r.get("DestinationIpv6CidrBlock")
        out[dest] = r.get("InstanceId") or r.get("NetworkInterfaceId") or r.get("GatewayId") or "?"
    print(json.dumps(out))
elif command == "delete":
    ec2.delete_route(RouteTableId=args[0], DestinationCidrBlock=args[1])
    print("{}")
elif command == "retarget":
    ec2.replace_route(RouteTableId=args[0], DestinationCidrBlock=args[1], InstanceId=args[2])
    print("{}")
else:
    sys.exit(f"unknown command {command}")
