"""Rewrite a TFLite flatbuffer so that dropouts left in its inference graph become identity.

A Keras dropout called with `training=True` is exported as `x · scale · cast(random_uniform(shape(x)) ≥ rate)`:
`MUL(x, scale)`, `SHAPE(x)`, `RandomUniform` (a TensorFlow op, stored as the custom op `FlexRandomUniform`),
`GREATER_EQUAL`, `CAST`, `MUL`. Interpreters without TensorFlow's Flex delegate (LiteRT) refuse the model.
Inference-mode dropout is the identity, so each matched chain is cut out and its consumers read `x`
directly; operator codes no operator uses any more are dropped. Nothing else in the model changes, and a
chain that does not match exactly is an error, never a guess.

Uses the flatbuffer schema that ships with ai-edge-litert (its object API) and the `flatbuffers` builder;
the bytes written depend on both, which is why pyproject.toml pins them and the manifest pins the result.
"""

from __future__ import annotations

from dataclasses import dataclass

RANDOM_UNIFORM = b"FlexRandomUniform"


@dataclass(frozen=True)
class Dropout:
    """One matched chain: the tensor it drops out, and the operator indices it spans."""

    source: str  # name of the tensor x
    rate: float
    scale: float
    ops: tuple[int, ...]


def _schema():  # noqa: ANN202 - the generated module
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _op_name(schema, code) -> str:  # noqa: ANN001
    if code.customCode:
        return code.customCode.decode()
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)  # the int8 field stops at 127
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(builtin, str(builtin))


def load(buf: bytes):  # noqa: ANN201 - schema.ModelT
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))


def custom_ops(buf: bytes) -> list[str]:
    """The custom (and Flex) op names the model's operators use, one entry per operator."""
    model = load(buf)
    out = []
    for sg in model.subgraphs:
        for op in sg.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            if code.customCode:
                out.append(code.customCode.decode())
    return out


def _const(model, tensor_index: int, sg) -> float | None:  # noqa: ANN001
    import numpy as np

    t = sg.tensors[tensor_index]
    data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
    if data is None or len(data) != 4 or t.type != _schema().TensorType.FLOAT32:
        return None
    return float(np.frombuffer(bytes(bytearray(data)), dtype=np.float32)[0])


def find_dropouts(model) -> list[Dropout]:  # noqa: ANN001
    """Every RandomUniform dropout chain in the first subgraph, checked op by op."""
    schema = _schema()
    sg = model.subgraphs[0]
    ops = sg.operators
    producer = {int(o): k for k, op in enumerate(ops) for o in op.outputs}
    consumers: dict[int, list[int]] = {}
    for k, op in enumerate(ops):
        for i in op.inputs:
            consumers.setdefault(int(i), []).append(k)

    def name(k: int) -> str:
        return _op_name(schema, model.operatorCodes[ops[k].opcodeIndex])

    def only_use(tensor: int, op: int) -> bool:
        return consumers.get(tensor) == [op] and tensor not in set(map(int, sg.outputs))

    found = []
    for ru, op in enumerate(ops):
        if name(ru) != RANDOM_UNIFORM.decode():
            continue
        why = f"operator {ru} ({RANDOM_UNIFORM.decode()}) is not a dropout chain"
        shape_t = int(op.inputs[0])
        shape_op = producer.get(shape_t)
        if shape_op is None or name(shape_op) != "SHAPE" or not only_use(shape_t, ru):
            raise ValueError(why + ": its input is not SHAPE(x)")
        x = int(ops[shape_op].inputs[0])
        rand = int(op.outputs[0])
        (ge,) = consumers.get(rand, [None])[:1] or [None]
        if ge is None or name(ge) != "GREATER_EQUAL" or not only_use(rand, ge) or int(ops[ge].inputs[0]) != rand:
            raise ValueError(why + ": no GREATER_EQUAL(random, rate) after it")
        rate = _const(model, int(ops[ge].inputs[1]), sg)
        keep = int(ops[ge].outputs[0])
        cast = consumers.get(keep, [None])[0]
        if cast is None or name(cast) != "CAST" or not only_use(keep, cast):
            raise ValueError(why + ": no CAST of the keep mask")
        mask = int(ops[cast].outputs[0])
        apply = consumers.get(mask, [None])[0]
        if apply is None or name(apply) != "MUL" or not only_use(mask, apply):
            raise ValueError(why + ": the mask is not multiplied in")
        scaled = next((int(i) for i in ops[apply].inputs if int(i) != mask), None)
        scale_op = producer.get(scaled) if scaled is not None else None
        if scale_op is None or name(scale_op) != "MUL" or not only_use(scaled, apply):
            raise ValueError(why + ": the masked tensor is not MUL(x, scale)")
        scale_in = [int(i) for i in ops[scale_op].inputs]
        if x not in scale_in:
            raise ValueError(why + ": the scaled tensor is not the one whose shape was taken")
        scale = _const(model, next(i for i in scale_in if i != x), sg)
        if rate is None or scale is None or abs(scale * (1.0 - rate) - 1.0) > 1e-5:
            raise ValueError(why + f": rate {rate} and scale {scale} are not a dropout's")
        found.append(
            Dropout(
                source=sg.tensors[x].name.decode(),
                rate=rate,
                scale=scale,
                ops=tuple(sorted((scale_op, shape_op, ru, ge, cast, apply))),
            )
        )
    return found


def patch(buf: bytes) -> tuple[bytes, list[Dropout]]:
    """The model with every RandomUniform dropout made identity, and the chains that were cut."""
    import flatbuffers

    schema = _schema()
    model = load(buf)
    if len(model.subgraphs) != 1:
        raise ValueError(f"expected one subgraph, found {len(model.subgraphs)}")
    dropouts = find_dropouts(model)
    sg = model.subgraphs[0]
    ops = sg.operators
    rewire: dict[int, int] = {}
    for d in dropouts:
        shape_op = next(ops[k] for k in d.ops if _op_name(schema, model.operatorCodes[ops[k].opcodeIndex]) == "SHAPE")
        out = int(ops[max(d.ops)].outputs[0])  # the masked MUL is the chain's last operator
        rewire[out] = int(shape_op.inputs[0])
    dead = {k for d in dropouts for k in d.ops}
    kept = [op for k, op in enumerate(ops) if k not in dead]
    for op in kept:
        op.inputs = [rewire.get(int(i), int(i)) for i in op.inputs]
    sg.outputs = [rewire.get(int(i), int(i)) for i in sg.outputs]
    sg.operators = kept
    # Drop operator codes nothing uses any more (the Flex op), keeping the others' order.
    used = sorted({op.opcodeIndex for op in kept})
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for op in kept:
        op.opcodeIndex = remap[op.opcodeIndex]
    builder = flatbuffers.Builder(len(buf) + (1 << 16))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), dropouts
