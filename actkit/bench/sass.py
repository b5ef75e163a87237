"""SASS of compiled Triton kernels, without a GPU: disassemble cubins, count instructions by opcode.

Disassembly. ``cuobjdump -sass`` (shipped in the Triton wheel, ``triton/backends/nvidia/bin``)
hands each cubin to ``nvdisasm``, which costs about 0.4 s of start-up per call whatever the
kernel's size: a few hundred kernels would spend minutes starting it. So :func:`count` takes the
code section (``.text.<kernel>``) out of every cubin, lays them end to end in one raw instruction
image and disassembles that once with ``nvdisasm -b SM90a`` (raw mode); the instructions are the
ones ``cuobjdump -sass`` prints for each cubin (tests/test_roofline.py checks one against it),
at addresses offset by where each kernel starts.

Counting. Each kernel's instructions are counted by mnemonic (``FFMA``, ``MUFU.EX2``,
``IMAD.WIDE.U32``; predicates and operands dropped), in two parts: the straight-line code,
executed once per thread, and each loop (a backward branch and the code from its target up to
it), executed once per trip, which the caller knows and the SASS does not. The padding after the
kernel's end (``EXIT`` followed by a branch to itself and ``NOP``s) is never executed and not
counted. A forward branch skips nothing in this count: both sides are counted, an upper bound
(actkit's elementwise kernels have none). Code that only a ``CALL`` reaches (ptxas places such
subroutines after the kernel's body) is counted apart and not charged: in actkit's kernels it is
the slow path of 64-bit integer division, which runs only for operands of 2^32 or more; the fast
32-bit path beside it is counted, and so is the call's setup.

:data:`CLASSES` sorts mnemonics into classes (MUFU, FP32, FP16, integer, conversion, move,
uniform, memory, control) and :data:`PIPES` into the execution pipes the roofline model charges
(:mod:`actkit.bench.roofline`).
"""
from __future__ import annotations

import bisect
import math
import re
import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence


class SassError(RuntimeError):
    """The SASS of a kernel could not be read (no disassembler, an unexpected cubin)."""


# -- classes and pipes -------------------------------------------------------------------------
# By the first part of the mnemonic (before the first '.'), except where a modifier changes the
# unit: IMAD.MOV is a move, HFMA2.MMA (how ptxas materialises constants) still runs on the FP16 path.
_CLASS_OF_OP = {
    "mufu": ("MUFU",),
    "fp32": ("FADD", "FMUL", "FFMA", "FADD32I", "FMUL32I", "FFMA32I", "FMNMX", "FSETP", "FSET", "FSEL", "FCHK",
             "FSWZADD"),
    "fp16": ("HADD2", "HMUL2", "HFMA2", "HMNMX2", "HSETP2", "HSET2", "HADD2_32I", "HMUL2_32I", "HFMA2_32I"),
    "integer": ("IADD3", "IADD", "IADD32I", "IMAD", "IMUL", "IMUL32I", "ISCADD", "ISETP", "IMNMX", "IABS", "LOP3",
                "LOP", "LOP32I", "SHF", "SHL", "SHR", "LEA", "SEL", "PRMT", "POPC", "FLO", "BREV", "BMSK", "SGXT",
                "IDP", "VIMNMX", "VABSDIFF", "VIADD", "VIADDMNMX", "VIMNMX3", "IDP4A"),
    "conversion": ("F2F", "F2I", "I2F", "F2FP", "I2FP", "F2IP", "I2I", "I2IP", "FRND"),
    "move": ("MOV", "MOV32I", "CS2R", "S2R", "S2UR", "SHFL", "P2R", "R2P", "PLOP3", "VOTE", "R2UR", "MOVM"),
    "memory": ("LDG", "STG", "LDS", "STS", "LD", "ST", "LDC", "LDL", "STL", "ATOM", "ATOMG", "ATOMS", "RED", "REDG",
               "LDGSTS", "LDSM", "STSM", "MEMBAR", "FENCE", "CCTL", "ERRBAR", "UBLKCP", "UTMALDG", "UTMASTG"),
    "control": ("BRA", "BRX", "JMP", "EXIT", "BAR", "BSSY", "BSYNC", "WARPSYNC", "CALL", "RET", "NOP", "YIELD",
                "DEPBAR", "BPT", "BREAK", "KILL", "ELECT", "ACQBULK", "SYNCS", "WARPGROUP", "NANOSLEEP"),
}
_CLASS = {op: cls for cls, ops in _CLASS_OF_OP.items() for op in ops}
CLASSES = tuple(_CLASS_OF_OP) + ("uniform", "other")
"""Instruction classes; ``uniform`` are the warp-wide scalar ``U*`` operations, ``other`` anything unknown."""

# The pipe each mnemonic occupies, named after the rows of the CUDA C Programming Guide's
# arithmetic-throughput table that give its rate (the rates are in actkit.bench.roofline).
# Special functions and the conversions the table rates at 16 per clock share one unit (XU).
PIPES = ("fma", "fp16", "alu", "imad", "xu", "shfl")
_PIPE_OF_OP = {
    "fma": ("FADD", "FMUL", "FFMA", "FADD32I", "FMUL32I", "FFMA32I"),
    "fp16": _CLASS_OF_OP["fp16"],
    "alu": ("IADD3", "IADD", "IADD32I", "ISCADD", "ISETP", "IMNMX", "IABS", "LOP3", "LOP", "LOP32I", "SHF", "SHL",
            "SHR", "LEA", "SEL", "PRMT", "BMSK", "SGXT", "FMNMX", "FSETP", "FSET", "FSEL", "FCHK", "FSWZADD", "MOV",
            "MOV32I", "PLOP3", "P2R", "R2P", "VIMNMX", "VABSDIFF", "VIADD", "VIADDMNMX", "VIMNMX3", "I2I", "I2IP"),
    "imad": ("IMAD", "IMUL", "IMUL32I", "IDP", "IDP4A"),
    "xu": ("MUFU", "F2F", "F2I", "I2F", "F2FP", "I2FP", "F2IP", "FRND", "POPC", "FLO", "BREV"),
    "shfl": ("SHFL",),
}
_PIPE = {op: pipe for pipe, ops in _PIPE_OF_OP.items() for op in ops}


def _head(mnemonic: str) -> str:
    return mnemonic.split(".", 1)[0]


def class_of(mnemonic: str) -> str:
    """The class of a SASS mnemonic (``"FFMA.FTZ"`` -> ``"fp32"``)."""
    head = _head(mnemonic)
    if mnemonic.startswith("IMAD.MOV"):
        return "move"
    if head in _CLASS:
        return _CLASS[head]
    return "uniform" if head.startswith("U") and head != "UNKNOWN" else "other"


def pipe_of(mnemonic: str) -> Optional[str]:
    """The execution pipe a mnemonic is charged to, or None (memory, control, uniform: issue only)."""
    return _PIPE.get(_head(mnemonic))


# -- cubins and the disassembler ------------------------------------------------------------------
def _sections(cubin: bytes) -> dict[str, bytes]:
    """The sections of a 64-bit little-endian ELF file, by name."""
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2 or cubin[5] != 1:
        raise SassError("not a 64-bit little-endian ELF cubin")
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", cubin, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]

    def name(offset: int) -> str:
        start = names_at + offset
        return cubin[start:cubin.index(b"\0", start)].decode()

    return {name(h[0]): cubin[h[4]:h[4] + h[5]] for h in headers}


def kernel_code(cubin: bytes) -> tuple[str, bytes]:
    """(kernel name, machine code) of a cubin holding one kernel, as Triton's do."""
    texts = {n[len(".text."):]: code for n, code in _sections(cubin).items() if n.startswith(".text.")}
    if len(texts) != 1:
        raise SassError(f"a cubin with {len(texts)} code sections ({', '.join(texts) or 'none'}); "
                        "the counter reads one kernel per cubin")
    return next(iter(texts.items()))


def tool(name: str) -> Path:
    """``nvdisasm`` or ``cuobjdump`` from the Triton wheel, else from PATH."""
    try:
        import triton

        shipped = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
        if shipped.is_file():
            return shipped
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise SassError(f"{name} not found: it ships in the triton wheel (triton/backends/nvidia/bin) or the "
                        "CUDA toolkit")
    return Path(found)


_LINE = re.compile(r"/\*([0-9a-f]+)\*/\s+(.*?)\s*;")
_TARGET = re.compile(r"(?:BRA|BRX|JMP|CALL\.REL(?:\.NOINC)?|BSSY|BREAK)\b.*?(0x[0-9a-f]+)\s*$")


def _disassemble(code: bytes, arch: int) -> list[tuple[int, str]]:
    """(address, instruction text) of raw machine code for sm_``arch``."""
    name = {80: "SM80", 90: "SM90a"}.get(arch) or f"SM{arch}"
    with _raw_file(code) as path:
        done = subprocess.run([str(tool("nvdisasm")), "-b", name, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SassError(f"nvdisasm -b {name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return [(int(m.group(1), 16), m.group(2)) for m in map(_LINE.search, done.stdout.splitlines()) if m]


class _raw_file:
    def __init__(self, code: bytes):
        import tempfile

        self.dir = tempfile.TemporaryDirectory(prefix="actkit-sass-")
        self.path = Path(self.dir.name) / "code.bin"
        self.path.write_bytes(code)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        self.dir.cleanup()


def _mnemonic(text: str) -> tuple[str, str]:
    """(mnemonic, operands) of one instruction's text, its predicate (``@!P0``) dropped."""
    parts = text.split(None, 1)
    if parts and parts[0].startswith("@"):
        parts = parts[1].split(None, 1) if len(parts) > 1 else [""]
    return parts[0], parts[1] if len(parts) > 1 else ""


def count_instructions(instructions: Sequence[tuple[int, str]]) -> dict:
    """``{"straight": {mnemonic: n}, "loops": [{mnemonic: n}, ...], "subroutines": {mnemonic: n},
    "instructions": n}`` for one kernel's instructions, in address order (addresses relative to the
    kernel's start). ``subroutines`` is the code only a ``CALL`` reaches (ptxas puts it after the
    kernel's body: 64-bit integer division's slow path, for operands of 2^32 or more)."""
    parsed, calls = [], []
    for address, text in instructions:
        op, operands = _mnemonic(text)
        target = _TARGET.search(f"{op} {operands}")
        jump = int(target.group(1), 16) if target and op.startswith(("BRA", "JMP")) else None
        if jump == address:  # the branch to itself after the last EXIT: padding starts here
            break
        if target and op.startswith("CALL"):
            calls.append(int(target.group(1), 16))
        parsed.append((address, op, jump))
    body_end = min(calls, default=math.inf)
    loops = [(jump, address) for address, op, jump in parsed if jump is not None and jump < address < body_end]
    for (s1, e1), (s2, e2) in zip(loops, loops[1:]):
        if s2 <= e1:
            raise SassError("nested or overlapping loops: the counter handles loops one after another")
    straight, bodies, subroutines = Counter(), [Counter() for _ in loops], Counter()
    for address, op, _ in parsed:
        inside = next((i for i, (start, end) in enumerate(loops) if start <= address <= end), None)
        part = subroutines if address >= body_end else straight if inside is None else bodies[inside]
        part[op] += 1
    return {"straight": dict(straight), "loops": [dict(b) for b in bodies], "subroutines": dict(subroutines),
            "instructions": len(parsed)}


def count(cubins: Sequence[bytes], arch: int) -> list[dict]:
    """:func:`count_instructions` of each cubin's kernel (plus its ``"name"``), from one disassembly."""
    if not cubins:
        return []
    names, image, starts = [], bytearray(), []
    for cubin in cubins:
        name, code = kernel_code(cubin)
        names.append(name)
        starts.append(len(image))
        image += code
    ends = starts[1:] + [len(image)]
    lines = _disassemble(bytes(image), arch)  # in address order
    addresses = [a for a, _ in lines]
    results = []
    for name, start, end in zip(names, starts, ends):
        own = lines[bisect.bisect_left(addresses, start):bisect.bisect_left(addresses, end)]
        results.append({"name": name, **count_instructions([(a - start, _rebase(t, start)) for a, t in own])})
    return results


_HEX = re.compile(r"0x([0-9a-f]+)\s*$")


def _rebase(text: str, start: int) -> str:
    """An instruction's branch target made relative to its kernel's start (raw mode prints image addresses)."""
    op = _mnemonic(text)[0]
    if not op.startswith(("BRA", "JMP", "BSSY", "CALL", "BREAK")):
        return text
    return _HEX.sub(lambda m: hex(int(m.group(1), 16) - start), text)
