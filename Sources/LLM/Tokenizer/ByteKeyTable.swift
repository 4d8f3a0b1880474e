// An open-addressing hash table keyed by short byte strings, for the BPE rank lookups and the
// word cache of the tokenizer's hot path. Keys of up to 8 bytes compare as one UInt64.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Key packing and hashing

/// The first min(len, 8) bytes at p as a little-endian UInt64 with zero padding, reading no byte
/// outside p[0..<len] (overlapping loads instead of a byte loop).
@inline(__always) func packKey(_ p: UnsafePointer<UInt8>, _ len: Int) -> UInt64 {
    let raw = UnsafeRawPointer(p)
    if len >= 8 { return UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self)) }
    if len >= 4 {
        let lo = UInt64(UInt32(littleEndian: raw.loadUnaligned(as: UInt32.self)))
        let hi = UInt64(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: len - 4, as: UInt32.self)))
        return lo | hi << UInt64(8 * (len - 4))
    }
    if len >= 2 {
        let lo = UInt64(UInt16(littleEndian: raw.loadUnaligned(as: UInt16.self)))
        let hi = UInt64(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: len - 2, as: UInt16.self)))
        return lo | hi << UInt64(8 * (len - 2))
    }
    return len == 1 ? UInt64(p[0]) : 0
}

@inline(__always) func hashKey(_ key: UInt64, _ p: UnsafePointer<UInt8>, _ len: Int) -> UInt64 {
    var h = (key ^ UInt64(truncatingIfNeeded: len) &* 0x2545F4914F6CDD1D) &* 0x9E3779B97F4A7C15
    if len > 8 {
        // Mix the rest in 8-byte chunks; the last chunk overlaps so no byte past the end is read.
        var i = 8
        let raw = UnsafeRawPointer(p)
        while i < len {
            let at = min(i, len - 8)
            let chunk = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self))
            h = (h ^ (h >> 29) ^ chunk) &* 0x9E3779B97F4A7C15
            i += 8
        }
    }
    return h ^ (h >> 32)
}

// MARK: - Table

/// Maps byte strings to a pair of Int32 values. A struct of raw pointers so the hot loop can hold
/// it in a local with no reference counting or exclusivity checks; the owner calls `deallocate()`.
/// Writes are single-threaded; lookups in a table that is no longer written are safe from any thread.
struct ByteKeyTable {
    struct Slot {
        var key: UInt64      // first 8 bytes, packed
        var length: Int32    // 0 = empty slot (the empty key is never stored)
        var keyOffset: Int32 // where the whole key lives in `keyBytes` when longer than 8 bytes
        var value0: Int32
        var value1: Int32
    }

    let slots: UnsafeMutablePointer<Slot>
    let mask: Int
    private(set) var count = 0
    private(set) var keyBytes: UnsafeMutablePointer<UInt8>
    private var keyBytesCount = 0
    private var keyBytesCapacity: Int

    init(capacityPowerOfTwo bits: Int) {
        let capacity = 1 << bits
        mask = capacity - 1
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: Slot(key: 0, length: 0, keyOffset: 0, value0: 0, value1: 0), count: capacity)
        keyBytesCapacity = 4096
        keyBytes = .allocate(capacity: keyBytesCapacity)
    }

    func deallocate() {
        slots.deallocate()
        keyBytes.deallocate()
    }

    var capacity: Int { mask + 1 }
    /// Inserts are refused beyond half full, which keeps probe sequences short.
    var isFull: Bool { count >= capacity / 2 }

    /// Empties the table, keeping its memory.
    mutating func removeAll() {
        slots.update(repeating: Slot(key: 0, length: 0, keyOffset: 0, value0: 0, value1: 0), count: capacity)
        count = 0
        keyBytesCount = 0
    }

    /// Looks up p[0..<len]; returns the slot index or -1.
    @inline(__always) func find(_ p: UnsafePointer<UInt8>, _ len: Int) -> Int {
        let key = packKey(p, len)
        var i = Int(truncatingIfNeeded: hashKey(key, p, len)) & mask
        let len32 = Int32(truncatingIfNeeded: len)
        while true {
            let s = slots[i]
            if s.length == 0 { return -1 }
            if s.key == key && s.length == len32 {
                if len <= 8 || memcmp(keyBytes + Int(s.keyOffset) + 8, p + 8, len - 8) == 0 { return i }
            }
            i = (i + 1) & mask
        }
    }

    /// value0 of the key, or -1 when absent.
    @inline(__always) func value0(_ p: UnsafePointer<UInt8>, _ len: Int) -> Int32 {
        let i = find(p, len)
        return i < 0 ? -1 : slots[i].value0
    }

    /// Inserts or overwrites; the caller checks `isFull` first.
    mutating func insert(_ p: UnsafePointer<UInt8>, _ len: Int, _ v0: Int32, _ v1: Int32 = 0) {
        precondition(len > 0 && !isFull)
        let found = find(p, len)
        if found >= 0 { slots[found].value0 = v0; slots[found].value1 = v1; return }
        let key = packKey(p, len)
        var i = Int(truncatingIfNeeded: hashKey(key, p, len)) & mask
        while slots[i].length != 0 { i = (i + 1) & mask }
        var offset: Int32 = 0
        if len > 8 {
            if keyBytesCount + len > keyBytesCapacity {
                let newCapacity = max(keyBytesCount + len, keyBytesCapacity * 2)
                let fresh = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
                fresh.update(from: keyBytes, count: keyBytesCount)
                keyBytes.deallocate()
                keyBytes = fresh
                keyBytesCapacity = newCapacity
            }
            offset = Int32(keyBytesCount)
            (keyBytes + keyBytesCount).update(from: p, count: len)
            keyBytesCount += len
        }
        slots[i] = Slot(key: key, length: Int32(len), keyOffset: offset, value0: v0, value1: v1)
        count += 1
    }
}
