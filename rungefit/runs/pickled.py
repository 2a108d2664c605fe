"""The shape of a checkpoint's pickle, measured before torch.load builds anything from it.

torch.load(weights_only=True) builds only tensors and plain containers, but a pickle of a few
hundred bytes can still cost it hours and gigabytes: a memo reference repeats an object, so a
tuple of two references to a tuple of two … nested 60 deep stands for 2**60 tuples, all of them
hashed when it is a dict key, and all of them printed by a repr. So each pickle in the archive is
first read opcode by opcode (pickletools.genops, which builds nothing) into a graph of which
object holds which, and refused unless every object in it, expanded, is at most MAX_DEPTH deep
and MAX_NODES objects in all. A checkpoint rungefit writes is a few levels deep and a few dozen
objects per tensor, so the bounds are far from any run.
"""

from __future__ import annotations

import pickletools
import zipfile
from typing import BinaryIO

# torch.save's archive (a zip, as every rungefit has written) keeps its pickle in <name>/data.pkl.
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_RECORD = "data.pkl"
MAX_PICKLE_BYTES = 64 << 20
MAX_OPCODES = 2_000_000
MAX_NODES = 2 * MAX_OPCODES  # objects a traversal of one unpickled object may visit, repeats included
MAX_DEPTH = 32

# What each opcode does to the unpickler's stack, by name (pickletools' names, as pickle's own).
LEAVES = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
    "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE",
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "NONE", "NEWTRUE", "NEWFALSE", "FLOAT",
    "BINFLOAT", "GLOBAL", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_SET", "PERSID",
    "EXT1", "EXT2", "EXT4", "NEXT_BUFFER",
})
MADE_FROM_MARK = frozenset({"TUPLE", "LIST", "DICT", "FROZENSET", "INST", "OBJ"})  # a new object of what lies above the mark
ADDED_FROM_MARK = frozenset({"APPENDS", "SETITEMS", "ADDITEMS"})  # what lies above the mark, into the object below it
ADDED = {"APPEND": 1, "SETITEM": 2, "BUILD": 1}  # the top N, into the object below them
MADE = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3, "STACK_GLOBAL": 2, "BINPERSID": 1, "READONLY_BUFFER": 1}
MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
NO_OBJECT = frozenset({"PROTO", "FRAME", "STOP"})


def check_archive(handle: BinaryIO) -> None:
    """ValueError saying what is wrong unless `handle` holds torch.save's zip archive whose every
    pickle has the shape check_pickle allows."""
    if handle.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
        raise ValueError("not the zip archive torch.save writes")
    with zipfile.ZipFile(handle) as archive:
        records = [info for info in archive.infolist() if info.filename.rpartition("/")[2] == PICKLE_RECORD]
        if not records:
            raise ValueError(f"the archive holds no {PICKLE_RECORD}")
        for info in records:
            with archive.open(info) as record:
                data = record.read(MAX_PICKLE_BYTES + 1)
            if len(data) > MAX_PICKLE_BYTES:
                raise ValueError(f"its pickle is larger than {MAX_PICKLE_BYTES} bytes")
            check_pickle(data)


def check_pickle(data: bytes) -> None:
    """ValueError saying what is wrong unless `data` is a pickle of at most MAX_OPCODES opcodes
    whose every object, expanded, is at most MAX_DEPTH deep and MAX_NODES objects in all."""
    _measure(_graph(data))


def _graph(data: bytes) -> list[list[int] | tuple]:
    """Which objects each object of the pickle holds (objects numbered as the pickle makes them),
    from a replay of what its opcodes do to the unpickler's stack, memo and marks."""
    held: list[list[int] | tuple] = []  # () for an object that holds nothing (most): one shared tuple
    stack: list[int] = []
    marks: list[int] = []  # where each open mark's part of the stack begins
    memo: dict[int, int] = {}

    def made(holding: list[int]) -> None:
        held.append(holding or ())
        stack.append(len(held) - 1)

    def add(items: list[int]) -> None:
        target = top()
        if not held[target]:
            held[target] = []
        held[target].extend(items)

    def floor() -> int:
        return marks[-1] if marks else 0

    def top() -> int:
        if len(stack) <= floor():
            raise ValueError("its pickle uses an object it never put on the stack")
        return stack[-1]

    def popped(count: int) -> list[int]:
        if len(stack) - count < floor():
            raise ValueError("its pickle takes more from the stack than it put there")
        items = stack[len(stack) - count :]
        del stack[len(stack) - count :]
        return items

    def above_mark() -> list[int]:
        if not marks:
            raise ValueError("its pickle closes a mark it never opened")
        items = stack[marks[-1] :]
        del stack[marks.pop() :]
        return items

    for count, (opcode, arg, _) in enumerate(pickletools.genops(data), start=1):
        name = opcode.name
        if count > MAX_OPCODES:
            raise ValueError(f"its pickle has more than {MAX_OPCODES} opcodes")
        if name in LEAVES:
            made([])
        elif name == "MARK":
            marks.append(len(stack))
        elif name in MADE_FROM_MARK:
            made(above_mark())
        elif name in MADE:
            made(popped(MADE[name]))
        elif name in ADDED_FROM_MARK:
            add(above_mark())
        elif name in ADDED:
            add(popped(ADDED[name]))
        elif name in MEMO_PUT:
            memo[len(memo) if arg is None else arg] = top()
        elif name in MEMO_GET:
            if arg not in memo:
                raise ValueError("its pickle refers to an object it never made")
            stack.append(memo[arg])
        elif name == "DUP":
            stack.append(top())
        elif name == "POP":
            popped(1)
        elif name == "POP_MARK":
            above_mark()
        elif name not in NO_OBJECT:
            raise ValueError(f"its pickle has an opcode that no checkpoint holds ({name})")
    return held


def _measure(held: list[list[int] | tuple]) -> None:
    """ValueError if an object, with everything it holds expanded (an object held twice counts
    twice), is deeper than MAX_DEPTH or more than MAX_NODES objects, or holds itself. Each object
    is measured once, from the measures of those it holds."""
    size, depth, state = [0] * len(held), [0] * len(held), bytearray(len(held))  # state: 0 new, 1 open, 2 done
    for root in range(len(held)):
        if state[root]:
            continue
        state[root] = 1
        path = [(root, 0)]
        while path:
            node, index = path[-1]
            if index < len(held[node]):
                path[-1] = (node, index + 1)
                child = held[node][index]
                if state[child] == 1:
                    raise ValueError("its pickle holds an object that holds itself")
                if state[child] == 0:
                    if len(path) >= MAX_DEPTH:
                        raise ValueError(f"its pickle nests objects more than {MAX_DEPTH} levels deep")
                    state[child] = 1
                    path.append((child, 0))
                continue
            path.pop()
            size[node] = min(MAX_NODES + 1, 1 + sum(size[child] for child in held[node]))
            depth[node] = 1 + max((depth[child] for child in held[node]), default=0)
            state[node] = 2
            if size[node] > MAX_NODES:
                raise ValueError(f"its pickle holds an object of more than {MAX_NODES} objects, counting each repeat")
            if depth[node] > MAX_DEPTH:
                raise ValueError(f"its pickle nests objects more than {MAX_DEPTH} levels deep")
