"""Writes the CPU-emulation copy of flash_attention.cu (with flash.cuh inlined): the PTX helpers
(ldmatrix, mma.sync, cp.async, cvt) are dropped so emu.h's emulations take their place (emu.h,
standing in for common.cuh, also has common.cuh's streaming store).
Usage: gen.py KERNEL_FILE OUT_FILE"""
import re, sys
import os
s = open(sys.argv[1]).read()
s = s.replace('#include "common.cuh"', '#include "emu.h"')
# The header the kernel file shares with flash_hopper.cu (the dS layout), inlined: the copy is one file.
header = os.path.join(os.path.dirname(sys.argv[1]), 'flash.cuh')
s = s.replace('#include "flash.cuh"', open(header).read().replace('#pragma once', ''))
names = ['sharedAddress', 'copyAsync16', 'commitCopies', 'waitAllButLatest', 'waitAll', 'loadMatrices', 'loadMatricesTransposed',
         'mma', 'packPair', 'transposeMatrix']
for n in names:
    m = re.search(r'__device__ __forceinline__ \w+ ' + n + r'\(', s)
    assert m, n
    start = m.start()
    line_end = s.index('\n', start)
    if s[start:line_end].rstrip().endswith('}'):  # one-line helper
        s = s[:start] + s[line_end + 1:]
    else:
        s = s[:start] + s[s.index('\n}\n', start) + 3:]
s = s.replace('extern __shared__ __align__(16) bf16 flashShared[];', 'bf16* flashShared = emuSharedBase();')
if re.search(r'\basm\b', s):
    sys.exit('gen.py: inline asm left that emu.h does not emulate')
open(sys.argv[2], 'w').write(s)
