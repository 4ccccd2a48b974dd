import Dispatch
import Foundation
import SystemTestSupport
import Glibc
import Redis
import RPC

/// A required environment variable is missing: the test fails with this message (never skips).
struct MissingEnvironment: Error, CustomStringConvertible {
    let name: String
    var description: String {
        "\(name) is not set. Run the tests through `make test`, or start throwaway servers with "
            + "`scripts/services temp swift test --filter RedisTests`."
    }
}

enum RedisTestEnv {
    static func redisURL() throws -> String {
        guard let value = ProcessInfo.processInfo.environment["REDIS_URL"], !value.isEmpty else {
            throw MissingEnvironment(name: "REDIS_URL")
        }
        return value
    }

    /// A client on `REDIS_URL` (or `configuration`) that only logs errors.
    static func client(_ configure: (inout RedisConfiguration) -> Void = { _ in }) throws -> RedisClient {
        var configuration = try RedisConfiguration(url: redisURL())
        configure(&configuration)
        return RedisClient(configuration, logger: Logger(minimum: .error))
    }

    /// A key prefix no other test (or run) uses.
    static func uniquePrefix(_ name: String) -> String {
        "test:\(name):\(UInt64.random(in: 0...UInt64.max) & 0xFFFF_FFFF_FFFF):"
    }
}

/// The `RedisError` a call threw, or nil when it succeeded or threw something else.
func redisError<T>(_ body: () async throws -> T) async -> RedisError? {
    do {
        _ = try await body()
        return nil
    } catch let error as RedisError {
        return error
    } catch {
        return nil
    }
}

/// The absolute path of `name` on PATH.
func executablePath(_ name: String) throws -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for dir in path.split(separator: ":") where access("\(dir)/\(name)", X_OK) == 0 {
        return "\(dir)/\(name)"
    }
    throw CommandFailed(what: name, output: "not found on PATH")
}

/// Elapsed wall time of `body`.
func measure<T>(_ body: () async throws -> T) async rethrows -> (T, Duration) {
    let start = ContinuousClock.now
    let value = try await body()
    return (value, ContinuousClock.now - start)
}

/// Pings until Redis answers (true) or `within` passes (false); returns how long it took.
func waitForPing(_ redis: RedisClient, within: Duration = .seconds(10)) async throws -> (recovered: Bool, after: Duration) {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < within {
        if (try? await redis.ping()) != nil { return (true, ContinuousClock.now - start) }
        try await Task.sleep(for: .milliseconds(20))
    }
    return (false, ContinuousClock.now - start)
}
