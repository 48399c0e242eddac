"""engines.graph_metadata: an ONNX graph's metadata_props read from the wire format, as onnx itself reads them."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from engines.factory import DEFAULT_INT8_ONNX_PATH, DEFAULT_ONNX_PATH
from engines.graph_metadata import GraphMetadataError, parse_graph_metadata, read_graph_metadata


def _model(props: dict[str, str]) -> bytes:
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, doc_string="a graph", producer_name="tests")
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def test_metadata_reads_as_onnx_reads_it():
    props = {"weights_sha256": "ab" * 32, "export_revision": "4", "note": "ünïcode and a long value " * 20}
    assert parse_graph_metadata(_model(props)) == props
    assert parse_graph_metadata(_model({})) == {}


def test_the_shipped_graphs_read_as_onnx_reads_them():
    for path in (DEFAULT_ONNX_PATH, DEFAULT_INT8_ONNX_PATH):
        assert path.is_file(), f"{path}: make models builds it"
        want = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        assert read_graph_metadata(path) == want
    # The quantized graph does not claim the FP32 export's stamp: its numbers are not that graph's.
    int8 = read_graph_metadata(DEFAULT_INT8_ONNX_PATH)
    assert "weights_sha256" not in int8 and "static INT8" in int8["quantized_from"]


@pytest.mark.parametrize("data, message", [
    (b"\xff" * 10, "varint is cut off or too long"),
    (_model({"k": "v"})[:-3], "runs past the end"),
    (b"\x0b", "wire type 3"),
    (b"\x00\x01", "field number 0"),
])
def test_bytes_that_are_no_model_are_refused(data, message):
    with pytest.raises(GraphMetadataError, match=message):
        parse_graph_metadata(data)
