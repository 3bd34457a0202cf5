#!/usr/bin/env python3
"""Test helper run inside network namespaces: `serve` answers TCP/UDP and logs raw SCTP
packets; `probe` sends a batch of probes concurrently and prints which succeeded.
Only addresses inside the test's own namespaces are ever used."""
import json
import socket
import struct
import sys
import threading
import time


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def sctp_init(sport, dport):
    # INIT chunk: type 1, flags 0, length 20, initiate tag, a_rwnd, streams, initial TSN.
    chunk = struct.pack("!BBHIIHHI", 1, 0, 20, 0x1234, 65535, 1, 1, 1)
    header = struct.pack("!HHII", sport, dport, 0, 0)
    crc = crc32c(header + chunk)
    header = struct.pack("!HHI", sport, dport, 0) + struct.pack("<I", crc)
    return header + chunk


def listener(port, v6=False):
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if v6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if v6 else "0.0.0.0", port))
    s.listen(64)
    return s


def serve(args):
    tcp_ports, udp_ports, log = args["tcp"], args["udp"], args["sctp_log"]
    def whoami(port, v6=False):
        # Answers with the address the connection came from: proof there is no NAT.
        s = listener(port, v6)
        while True:
            c, peer = s.accept()
            try:
                c.sendall(peer[0].encode())
            finally:
                c.close()
    def echo(port):
        s = listener(port)
        def one(c):
            with c:
                while True:
                    data = c.recv(64)
                    if not data:
                        return
                    c.sendall(data)
        while True:
            c, _ = s.accept()
            threading.Thread(target=one, args=(c,), daemon=True).start()
    for p in args.get("whoami", []):
        threading.Thread(target=whoami, args=(p,), daemon=True).start()
        if args.get("v6"):
            threading.Thread(target=whoami, args=(p, True), daemon=True).start()
    for p in args.get("echo", []):
        threading.Thread(target=echo, args=(p,), daemon=True).start()
    def tcp(port):
        s = listener(port)
        while True:
            c, _ = s.accept()
            try:
                c.sendall(b"ok")
            finally:
                c.close()
    def udp(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        while True:
            data, peer = s.recvfrom(64)
            s.sendto(b"ok", peer)
    def sctp():
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
        with open(log, "a") as f:
            while True:
                data, peer = s.recvfrom(2048)
                ihl = (data[0] & 0x0F) * 4
                sport, dport = struct.unpack("!HH", data[ihl:ihl + 4])
                f.write(f"{peer[0]} {sport} {dport}\n")
                f.flush()
    for p in tcp_ports:
        threading.Thread(target=tcp, args=(p,), daemon=True).start()
    for p in udp_ports:
        threading.Thread(target=udp, args=(p,), daemon=True).start()
    threading.Thread(target=sctp, daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def probe(job, timeout):
    proto, dst, port = job["proto"], job["dst"], job.get("port")
    try:
        if proto == "whoami":
            with socket.create_connection((dst, port), timeout=timeout) as s:
                return s.recv(64).decode()
        if proto == "hold":
            # One connection kept for `duration` seconds, a byte each way every 50 ms.
            with socket.create_connection((dst, port), timeout=timeout) as s:
                deadline = time.time() + job["duration"]
                while time.time() < deadline:
                    s.sendall(b"x")
                    if s.recv(1) != b"x":
                        return False
                    time.sleep(0.05)
                return True
        if proto == "repeat":
            # A fresh TCP connection every 50 ms for `duration` seconds: how many got through.
            deadline = time.time() + job["duration"]
            passed = 0
            while time.time() < deadline:
                try:
                    with socket.create_connection((dst, port), timeout=0.2) as s:
                        passed += 1 if s.recv(2) == b"ok" else 0
                except OSError:
                    pass
                time.sleep(0.05)
            return passed
        if proto == "tcp":
            with socket.create_connection((dst, port), timeout=timeout) as s:
                return s.recv(2) == b"ok"
        if proto == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(b"hi", (dst, port))
                data, _ = s.recvfrom(64)
                return data == b"ok"
        if proto == "sctp":
            with socket.socket(socket.AF_INET, socket.SOCK_RAW, 132) as s:
                s.sendto(sctp_init(job["sport"], port), (dst, 0))
            return None  # decided from the receiver's log
        if proto == "icmp":
            with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
                s.settimeout(timeout)
                ident = job["sport"] & 0xFFFF
                body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"tessera"
                csum = 0
                for i in range(0, len(body), 2):
                    csum += (body[i] << 8) + (body[i + 1] if i + 1 < len(body) else 0)
                csum = (csum >> 16) + (csum & 0xFFFF)
                csum = ~(csum + (csum >> 16)) & 0xFFFF
                s.sendto(body[:2] + struct.pack("!H", csum) + body[4:], (dst, 0))
                deadline = time.time() + timeout
                while time.time() < deadline:
                    s.settimeout(max(0.01, deadline - time.time()))
                    data, peer = s.recvfrom(2048)
                    ihl = (data[0] & 0x0F) * 4
                    if peer[0] == dst and data[ihl] == 0 and struct.unpack("!H", data[ihl + 4:ihl + 6])[0] == ident:
                        return True
                return False
    except (OSError, socket.timeout):
        return False
    return False


def main():
    mode = sys.argv[1]
    args = json.loads(sys.stdin.readline())
    if mode == "serve":
        serve(args)
        return
    results = {}
    def run(job):
        results[job["id"]] = probe(job, args["timeout"])
    threads = [threading.Thread(target=run, args=(j,)) for j in args["jobs"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
