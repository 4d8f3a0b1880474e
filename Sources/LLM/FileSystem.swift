// Directory helpers with plain libc (no Foundation): mkdir -p, listing, removal, and fsync of a
// directory so that a rename inside it survives a power cut.
//
// API:
//   try makeDirectories("out/run1")        // like mkdir -p; fine if it exists
//   try listDirectory("out/run1")          // entry names, sorted, without "." and ".."
//   try syncDirectory("out/run1")          // fsync the directory entry table
//   try removeFile("out/run1/x.bin")       // unlink; a missing file is not an error
//   isDirectory("out")

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

private func errnoText() -> String { String(cString: strerror(errno)) }

public func isDirectory(_ path: String) -> Bool {
    var st = stat()
    guard stat(path, &st) == 0 else { return false }
    return (st.st_mode & S_IFMT) == S_IFDIR
}

/// Creates `path` and any missing parents (mode 0755), like `mkdir -p`.
public func makeDirectories(_ path: String) throws {
    if path.isEmpty || isDirectory(path) { return }
    // Create each prefix in turn; an existing one (or one made by a racing process) is fine.
    var prefix = path.hasPrefix("/") ? "/" : ""
    for component in path.split(separator: "/", omittingEmptySubsequences: true) {
        prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + component
        if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
            throw LLMError("\(prefix): cannot create directory (\(errnoText()))")
        }
    }
    if !isDirectory(path) { throw LLMError("\(path): exists and is not a directory") }
}

/// The names in a directory, sorted, without "." and "..".
public func listDirectory(_ path: String) throws -> [String] {
    guard let dir = opendir(path) else {
        throw LLMError("\(path): cannot list directory (\(errnoText()))")
    }
    defer { closedir(dir) }
    var names: [String] = []
    // A record from readdir is only as long as its name (d_reclen), so the name is read in place
    // through its offset: copying `entry.pointee` reads sizeof(dirent) bytes and can run past the
    // end of the directory buffer (a crash seen in CI on /usr/lib/x86_64-linux-gnu).
    let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
    while let entry = readdir(dir) {
        let name = String(cString: (UnsafeRawPointer(entry) + nameOffset).assumingMemoryBound(to: CChar.self))
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

/// Deletes a file; one that is already gone is not an error.
public func removeFile(_ path: String) throws {
    if unlink(path) != 0 && errno != ENOENT {
        throw LLMError("\(path): cannot delete (\(errnoText()))")
    }
}

/// Flushes a directory's entries to disk, so renames into it are durable before what follows.
public func syncDirectory(_ path: String) throws {
    let fd = open(path.isEmpty ? "." : path, O_RDONLY)
    if fd < 0 { throw LLMError("\(path): cannot open directory to sync (\(errnoText()))") }
    defer { close(fd) }
    // Some filesystems refuse fsync on a directory (EINVAL); the data files are synced anyway.
    if fsync(fd) != 0 && errno != EINVAL {
        throw LLMError("\(path): cannot sync directory (\(errnoText()))")
    }
}

/// `directory/name`, without doubling a trailing slash.
public func joinPath(_ directory: String, _ name: String) -> String {
    if directory.isEmpty { return name }
    return directory.hasSuffix("/") ? directory + name : directory + "/" + name
}
