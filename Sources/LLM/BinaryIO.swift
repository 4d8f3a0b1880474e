// Whole-file reads and crash-safe writes with plain libc, so the `llm` binary needs no Foundation.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Reading

/// The bytes of a file, read whole. Errors name the file.
public func readFileBytes(_ path: String) throws -> [UInt8] {
    guard let f = fopen(path, "rb") else {
        throw LLMError("\(path): cannot open (\(String(cString: strerror(errno))))")
    }
    defer { fclose(f) }
    fseeko(f, 0, SEEK_END)
    let size = Int(ftello(f))
    fseeko(f, 0, SEEK_SET)
    if size < 0 { throw LLMError("\(path): cannot read its size") }
    var bytes = [UInt8](repeating: 0, count: size)
    if size > 0 {
        let got = bytes.withUnsafeMutableBytes { fread($0.baseAddress, 1, size, f) }
        if got != size { throw LLMError("\(path): read \(got) of \(size) bytes") }
    }
    return bytes
}

/// Size of a file in bytes, or nil if it does not exist.
public func fileSize(_ path: String) -> Int? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return Int(st.st_size)
}

public func fileExists(_ path: String) -> Bool { fileSize(path) != nil }

/// Reads `count` bytes at `offset` of an open file into `buffer`; errors name the file.
public func readExactly(_ f: UnsafeMutablePointer<FILE>, _ buffer: UnsafeMutableRawPointer, count: Int,
                        offset: Int, path: String) throws {
    if fseeko(f, off_t(offset), SEEK_SET) != 0 {
        throw LLMError("\(path): cannot seek to byte \(offset)")
    }
    let got = fread(buffer, 1, count, f)
    if got != count {
        throw LLMError("\(path): truncated: wanted \(count) bytes at offset \(offset), got \(got)")
    }
}

// MARK: - Writing

/// Writes a file by streaming chunks to `path.tmp`, flushing, syncing and renaming, so a crash
/// never leaves a half-written file under the real name.
public final class AtomicFileWriter {
    public let path: String
    let temporaryPath: String
    var file: UnsafeMutablePointer<FILE>?

    public init(path: String) throws {
        self.path = path
        self.temporaryPath = path + ".tmp"
        guard let f = fopen(temporaryPath, "wb") else {
            throw LLMError("\(temporaryPath): cannot create (\(String(cString: strerror(errno))))")
        }
        file = f
    }

    public func write(_ buffer: UnsafeRawBufferPointer) throws {
        guard let f = file else { throw LLMError("\(path): write after close") }
        if buffer.count == 0 { return }
        if fwrite(buffer.baseAddress, 1, buffer.count, f) != buffer.count {
            throw LLMError("\(temporaryPath): write failed (\(String(cString: strerror(errno))))")
        }
    }

    public func write<T>(_ array: [T]) throws {
        try array.withUnsafeBytes { try write($0) }
    }

    /// Flushes, fsyncs and renames onto the final name.
    public func commit() throws {
        guard let f = file else { return }
        file = nil
        if fflush(f) != 0 || fsync(fileno(f)) != 0 {
            fclose(f); unlink(temporaryPath)
            throw LLMError("\(temporaryPath): flush failed (\(String(cString: strerror(errno))))")
        }
        fclose(f)
        if rename(temporaryPath, path) != 0 {
            unlink(temporaryPath)
            throw LLMError("\(path): rename from \(temporaryPath) failed (\(String(cString: strerror(errno))))")
        }
    }

    /// Drops the temporary file; used when an error interrupts writing.
    public func abandon() {
        if let f = file { fclose(f); file = nil; unlink(temporaryPath) }
    }

    deinit { abandon() }
}

/// Writes `bytes` to `path` atomically (temporary name, fsync, rename).
public func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws {
    let w = try AtomicFileWriter(path: path)
    try w.write(bytes)
    try w.commit()
}

// MARK: - Little-endian header helpers

/// The 256 x int32 header that starts every llm.c file.
public let llmcHeaderInts = 256
public let llmcHeaderBytes = 1024

@inline(__always) func readInt32LE(_ bytes: UnsafeRawBufferPointer, _ index: Int) -> Int32 {
    Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: index * 4, as: Int32.self))
}
