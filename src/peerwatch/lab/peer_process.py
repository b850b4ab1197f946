"""One real libtorrent peer of the lab, as its own process (two sessions in one process can break
UDP trackers, and libtorrent allows one connection per IP by default, so each peer gets its own
process and its own 127.x address).

    python -m peerwatch.lab.peer_process CONFIG.json

The config (written by `lab.swarm`) names the address, the DHT nodes to start from, the encryption
policy and the torrents with their data folders. The process prints `READY <ip> <port>` once it
listens, rewrites its status file every second (torrents, progress, peers, DHT nodes), and exits
cleanly on SIGTERM or SIGINT. The address may be IPv6 (`::1`, the lab's IPv6 peer and DHT node).
It binds to its loopback address only: DHT bootstrap, local service discovery, UPnP and NAT-PMP
are off, so it never sends anything off this machine.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, cast

import libtorrent as lt


def settings(config: dict[str, Any]) -> dict[str, Any]:
    ip, port = config["ip"], config["port"]
    pack: dict[str, Any] = {
        # An IPv6 address is bracketed (the lab's IPv6 peer and DHT node are on [::1]).
        "listen_interfaces": f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}",
        "outgoing_interfaces": ip,
        "enable_dht": bool(config.get("dht", True)),
        "dht_bootstrap_nodes": "",  # never the public bootstrap routers
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # On loopback every node shares 127/8: without these the routing tables stay at one node
        # and lookups refuse our own addresses.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "dht_enforce_node_id": False,
        "allow_multiple_connections_per_ip": True,
        # Keep connections between peers that have nothing to trade (two partial copies): PEX
        # names only connected peers, and the lab wants its swarm graph stable.
        "close_redundant_connections": False,
        # libtorrent spreads DHT announces over this interval divided by the number of torrents
        # (default 15 min): a peer's second torrent would reach the DHT minutes later.
        "dht_announce_interval": 10,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "alert_mask": lt.alert.category_t.status_notification
        | lt.alert.category_t.error_notification,
        "user_agent": f"peerwatch-lab/{config['name']} libtorrent/{lt.__version__}",
    }
    if config.get("encryption") == "forced":
        pack["out_enc_policy"] = int(lt.enc_policy.forced)
        pack["in_enc_policy"] = int(lt.enc_policy.forced)
        pack["allowed_enc_level"] = int(lt.enc_level.rc4)
    else:
        pack["out_enc_policy"] = int(lt.enc_policy.enabled)
        pack["in_enc_policy"] = int(lt.enc_policy.enabled)
        pack["allowed_enc_level"] = int(lt.enc_level.both)
    return pack


def status(
    session: lt.session, handles: list[lt.torrent_handle], config: dict[str, Any]
) -> dict[str, Any]:
    torrents = []
    for h in handles:
        st = h.status()
        ih = h.info_hashes()
        torrents.append(
            {
                "v1": str(ih.v1) if ih.has_v1() else None,
                "v2": str(ih.v2) if ih.has_v2() else None,
                "state": str(st.state),
                "progress_ppm": int(st.progress_ppm),
                "pieces_have": int(st.num_pieces),
                "peers": int(st.num_peers),
                "seeding": bool(st.is_seeding),
            }
        )
    return {
        "name": config["name"],
        "ip": config["ip"],
        "port": config["port"],
        "pid": os.getpid(),
        "time": time.time(),
        "dht_nodes": int(session.status().dht_nodes),
        "torrents": torrents,
    }


def main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    session = lt.session(cast("lt.settings_pack", settings(config)))
    for host, port in config.get("dht_nodes", []):
        session.add_dht_node((host, int(port)))
    handles = []
    for t in config["torrents"]:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(t["torrent"])
        atp.save_path = t["save_path"]
        if t.get("upload_only", True):
            # Seeds and partial peers keep what they have: never download the rest.
            atp.flags |= lt.torrent_flags.upload_mode
        atp.flags &= ~lt.torrent_flags.auto_managed
        atp.flags &= ~lt.torrent_flags.paused
        if t.get("download_rate_limit"):
            # A leecher: it downloads, slowly enough to stay partial for minutes.
            atp.download_limit = int(t["download_rate_limit"])
        handles.append(session.add_torrent(atp))
    status_file = Path(config["status_file"])
    ready = False
    deadline = time.monotonic() + 30
    while not stop:
        for alert in session.pop_alerts():
            if isinstance(alert, lt.listen_succeeded_alert) and not ready:
                ready = True
                print(f"READY {config['ip']} {config['port']}", flush=True)
            elif isinstance(alert, lt.listen_failed_alert):
                print(f"FAILED {alert.message()}", flush=True)
                return 1
        if not ready and time.monotonic() > deadline:
            print("FAILED no listen_succeeded_alert within 30 s", flush=True)
            return 1
        tmp = status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status(session, handles, config)))
        tmp.replace(status_file)
        session.wait_for_alert(1000)
    session.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
