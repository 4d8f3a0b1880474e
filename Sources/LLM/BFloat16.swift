// bf16 as stored in llm.c's v5 checkpoints: the upper 16 bits of an fp32, round to nearest even.

@inline(__always) public func bf16FromFloat(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    if x.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x40 } // keep it a quiet NaN
    let roundingBias: UInt32 = 0x7FFF + ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: (bits &+ roundingBias) >> 16)
}

@inline(__always) public func floatFromBF16(_ h: UInt16) -> Float {
    Float(bitPattern: UInt32(h) << 16)
}
