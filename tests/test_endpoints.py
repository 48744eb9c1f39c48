"""Endpoints by construction: every built flow has a distinct client and server, a host keeps
one role within a class (the service port's side is the server), and a connection cut into
chunks (``max_flow_packets``) keeps its roles. Checked on real records of the bundled corpus
rebuilt through the address plan, on markov output, and against the flow table itself."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from baseline_support import SmallDataset

import pytrafgen
from pytrafgen.address_plan import AddressPlan, AddressPool, ClassAddresses, addr_to_bytes
from pytrafgen.build import build_frames, write_records
from pytrafgen.capture import read_pcap
from pytrafgen.flows import assemble_flows
from pytrafgen.generators.markov import MarkovGenerator
from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords
from pytrafgen.records_from_packets import records_from_packets

CORPUS = Path(pytrafgen.__file__).parent / "data" / "corpus"
CHUNK = 16


def corpus_files() -> list[tuple[str, Path]]:
    import csv

    with (CORPUS / "manifest.csv").open(newline="") as fh:
        return [(r["class"], CORPUS / r["file"]) for r in csv.DictReader(fh)]


def concat(parts: list[FieldRecords], classes: list[str]) -> FieldRecords:
    packets = {k: [] for k in PACKET_COLUMNS}
    flows = {k: [] for k in FLOW_COLUMNS}
    blob_at = flow_at = 0
    for r in parts:
        for k, v in r.packets.items():
            packets[k].append(v + np.uint64(blob_at) if k.endswith("_off") else v + flow_at if k == "flow" else v)
        for k, v in r.flows.items():
            flows[k].append(v)
        blob_at += len(r.blob)
        flow_at += r.n_flows
    return FieldRecords({k: np.concatenate(v).astype(PACKET_COLUMNS[k]) for k, v in packets.items()},
                        {k: np.concatenate(v).astype(FLOW_COLUMNS[k]) for k, v in flows.items()},
                        np.concatenate([r.blob for r in parts]), classes)


@pytest.fixture(scope="module")
def chunked_corpus(tmp_path_factory: pytest.TempPathFactory) -> SmallDataset:
    """Every class of the bundled corpus, flows cut at 16 packets as the default model's data."""
    files = corpus_files()
    classes = [c for c, _ in files]
    parts, plan = [], AddressPlan()
    for k, (_, path) in enumerate(files):
        table = read_pcap(path)
        flows = assemble_flows(table, max_flow_packets=CHUNK)
        labels = np.full(len(flows.proto), k, np.int16)
        parts.append(records_from_packets(table, flows, labels, classes, keep_derived=False))
        plan.classes.update(AddressPlan.learn(table, flows, labels, classes).classes)
    out = tmp_path_factory.mktemp("corpus-plan")
    plan.save(out / "address_plan.json")
    return SmallDataset(concat(parts, classes), classes, ["benign"] * len(classes), out)


def assert_endpoints_valid(pcap: Path, flow_classes: list[str]) -> None:
    """0 packets from a host to itself; per class no host is both a client and a server. The
    server of a flow read back is the reader's (SYN receiver, service port's side of a TCP flow
    seen mid-connection); for UDP, which the reader names by first sender, the end whose port
    serves more flows of the class."""
    table = read_pcap(pcap)
    assert int(np.all(table.src == table.dst, axis=1).sum()) == 0
    flows = assemble_flows(table)
    assert len(flow_classes) == len(flows.proto)
    names = np.asarray(flow_classes)
    for name in set(flow_classes):
        mine = np.flatnonzero(names == name)
        served = Counter(flows.server_port[mine].tolist())
        clients, servers = set(), set()
        for f in mine:
            client, server = bytes(flows.client_addr[f]), bytes(flows.server_addr[f])
            if flows.proto[f] == 17 and served[int(flows.client_port[f])] > served[int(flows.server_port[f])]:
                client, server = server, client
            clients.add(client)
            servers.add(server)
        assert not clients & servers, name


def test_a_cut_connection_keeps_its_roles() -> None:
    """Chunks of a connection have the whole connection's client, not their first sender."""
    for _, path in corpus_files():
        table = read_pcap(path)
        whole, cut = assemble_flows(table), assemble_flows(table, max_flow_packets=4)
        ok = whole.flow_id >= 0
        assert np.array_equal(whole.direction[ok], cut.direction[ok]), path.name
        assert np.array_equal(whole.client_addr[whole.flow_id[ok]], cut.client_addr[cut.flow_id[ok]]), path.name


def test_real_chunks_rebuilt_through_the_plan(chunked_corpus: SmallDataset, tmp_path: Path) -> None:
    plan = AddressPlan.load(chunked_corpus.path / "address_plan.json")
    summary = write_records(tmp_path / "real.pcap", chunked_corpus.train, plan, seed=4)
    assert_endpoints_valid(tmp_path / "real.pcap", summary["flow_classes"])


def test_markov_output_has_valid_endpoints(chunked_corpus: SmallDataset, tmp_path: Path) -> None:
    gen = MarkovGenerator()
    gen.fit(chunked_corpus)
    records = gen.sample(dict.fromkeys(chunked_corpus.classes, 25), seed=5)
    plan = AddressPlan.load(chunked_corpus.path / "address_plan.json")
    summary = write_records(tmp_path / "markov.pcap", records, plan, seed=5)
    assert_endpoints_valid(tmp_path / "markov.pcap", summary["flow_classes"])


def test_a_plan_with_a_host_in_both_roles_is_separated() -> None:
    """Plans learned before roles were kept across chunks list hosts in both pools; loading
    them keeps each host in the role where it carried more flows."""
    entry = ClassAddresses()
    entry.pools["client"][4] = AddressPool(["10.0.0.2", "10.0.0.1", "10.0.0.3"], [30, 10, 5])
    entry.pools["server"][4] = AddressPool(["10.0.0.1", "10.0.0.2"], [70, 3])
    plan = AddressPlan.from_json(AddressPlan(classes={"c": entry}).to_json())
    got = plan.classes["c"].pools
    assert got["client"][4].listed == ["10.0.0.2", "10.0.0.3"] and got["client"][4].counts == [30, 5]
    assert got["server"][4].listed == ["10.0.0.1"] and got["server"][4].counts == [70]


def _one_flow_records(client_port: int, server_port: int, first_flags: int, n_flows: int = 50) -> FieldRecords:
    packets = {n: np.zeros(2 * n_flows, d) for n, d in PACKET_COLUMNS.items()}
    packets["flow"] = np.repeat(np.arange(n_flows, dtype=np.int32), 2)
    packets["direction"][1::2] = 1
    packets["ts_ns"][1::2] = 1000
    packets["ttl"][:] = 64
    packets["tcp_flags"][0::2] = first_flags
    packets["tcp_flags"][1::2] = 0x18
    packets["window"][:] = 512
    flows = {n: np.zeros(n_flows, d) for n, d in FLOW_COLUMNS.items()}
    flows["ip_version"][:] = 4
    flows["proto"][:] = 6
    flows["client_port"][:] = client_port
    flows["server_port"][:] = server_port
    return FieldRecords(packets, flows, np.zeros(0, np.uint8), ["c"])


def test_a_flow_with_the_service_port_on_the_client_side_is_turned_round() -> None:
    """Of 50 mid-connection flows of a class served on 1883, 10 name the 1883 end "client":
    they are built with 1883 on the server's address like the others."""
    plan = AddressPlan.from_cidrs(["10.0.0.0/24"], ["10.0.9.1/32"])
    server = np.frombuffer(addr_to_bytes("10.0.9.1")[12:], np.uint8)
    records = _one_flow_records(1883, 1883, 0x18)
    records.flows["client_port"][:] = np.arange(45000, 45050)
    records.flows["client_port"][40:], records.flows["server_port"][40:] = 1883, np.arange(46000, 46010)
    table = build_frames(records, plan, seed=0).to_table()
    from_server = np.all(table.src[:, 12:] == server, axis=1)
    assert from_server.sum() == len(table) // 2
    assert set(table.sport[from_server].tolist()) == {1883}
    # a flow that opens with its client's SYN is left as it is
    records.packets["tcp_flags"][0::2] = 0x02
    table = build_frames(records, plan, seed=0).to_table()
    from_server = np.all(table.src[:, 12:] == server, axis=1)
    assert set(table.sport[from_server].tolist()) == {1883, *range(46000, 46010)}


def test_a_client_drawn_equal_to_its_server_is_redrawn() -> None:
    plan = AddressPlan.from_cidrs(["10.0.0.0/30"], ["10.0.0.0/30"])  # two hosts, both roles
    table = build_frames(_one_flow_records(40000, 80, 0x02, n_flows=300), plan, seed=2).to_table()
    assert not np.any(np.all(table.src == table.dst, axis=1))
