// Finding and opening NVIDIA's shared libraries at run time (dlopen), so nothing CUDA is
// needed to build llm; every symbol is looked up by name and cast to its C signature.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LLM

// MARK: - Environment

/// The value of the environment variable `name`; unset and empty are both nil.
func environmentValue(_ name: String) -> String? {
    guard let p = getenv(name) else { return nil }
    let s = String(cString: p)
    return s.isEmpty ? nil : s
}

// MARK: - Search path

/// Folders searched, in order: the CUDA toolkit variables, /usr/local/cuda, LD_LIBRARY_PATH, then
/// the standard library folders. `dlopen` of the bare name (the loader's own cache) comes last.
public func cudaLibrarySearchDirectories() -> [String] {
    var dirs: [String] = []
    if let d = environmentValue("LLM_CUDA_LIB_DIR") { dirs.append(d) }
    for name in ["CUDA_HOME", "CUDA_PATH"] {
        if let root = environmentValue(name) { dirs += [root + "/lib64", root + "/lib", root + "/targets/x86_64-linux/lib"] }
    }
    dirs += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
    if let ld = environmentValue("LD_LIBRARY_PATH") { dirs += ld.split(separator: ":").map(String.init) }
    dirs += ["/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64",
             "/lib/x86_64-linux-gnu", "/lib64", "/usr/lib/wsl/lib", "/usr/lib"]
    var seen = Set<String>()
    return dirs.filter { seen.insert($0).inserted }
}

/// Versioned file names in `dir` that start with `stem` (e.g. "libnvrtc.so."), newest first.
func versionedLibraries(in dir: String, stem: String) -> [String] {
    // A folder that cannot be listed (missing, no permission) simply holds nothing.
    guard let names = try? listDirectory(dir) else { return [] }
    // libnvrtc.so.13 but not libnvrtc-builtins or libnvrtc.alt
    let found = names.filter { name in
        name.hasPrefix(stem) && name.dropFirst(stem.count).allSatisfy { $0.isNumber || $0 == "." }
    }
    func version(_ s: String) -> [Int] { s.dropFirst(stem.count).split(separator: ".").compactMap { Int($0) } }
    return found.sorted { version($0).lexicographicallyPrecedes(version($1)) }.reversed()
}

// MARK: - Library

public final class DynamicLibrary {
    public let path: String
    let handle: UnsafeMutableRawPointer

    private init(path: String, handle: UnsafeMutableRawPointer) {
        self.path = path
        self.handle = handle
    }

    /// Opens the first library found: for each folder, the names in `names` and then any
    /// `stem` + version; finally the bare names through the loader's cache.
    public static func open(names: [String], stem: String, what: String) throws -> DynamicLibrary {
        var tried: [String] = []
        for dir in cudaLibrarySearchDirectories() {
            for name in names + versionedLibraries(in: dir, stem: stem) {
                let path = dir + "/" + name
                guard fileExists(path) else { continue }
                if let h = dlopen(path, RTLD_NOW | RTLD_GLOBAL) { return DynamicLibrary(path: path, handle: h) }
                tried.append("\(path): \(String(cString: dlerror()))")
            }
        }
        for name in names {
            if let h = dlopen(name, RTLD_NOW | RTLD_GLOBAL) { return DynamicLibrary(path: name, handle: h) }
        }
        let detail = tried.isEmpty ? "" : " (" + tried.joined(separator: "; ") + ")"
        throw LLMError("\(what): no \(names.first ?? stem) found in CUDA_HOME, CUDA_PATH, /usr/local/cuda, "
                       + "LD_LIBRARY_PATH or the standard library folders\(detail)")
    }

    /// The symbol `name` cast to the C function type `T`.
    public func symbol<T>(_ name: String, _ type: T.Type = T.self) throws -> T {
        guard let p = dlsym(handle, name) else {
            throw LLMError("\(path): has no symbol \(name) (too old a version?)")
        }
        return unsafeBitCast(p, to: T.self)
    }
}
