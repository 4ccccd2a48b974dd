import ProtoCodec
import RPC
import StandardServices

/// Builds the method table: which services this process answers, and with what.
enum ServiceWiring {
    /// The product's own services. Methods without a handler yet answer UNIMPLEMENTED (the
    /// transport does that for any path it does not know), but reflection still describes them.
    static let productServices = ["pixtrack.v1.TrackingService", "pixtrack.v1.PaymentService"]

    /// - Parameters:
    ///   - domainMethods: the product services' handlers (e.g. `TrackingService.methods`).
    ///   - isServing: what `grpc.health.v1.Health/Check` reports (NOT_SERVING while PostgreSQL is down).
    static func router(options: ServerOptions, logger: Logger, domainMethods: [RPCMethod] = [],
                       isServing: @escaping StandardServices.HealthStatusProvider = { true }) throws -> RPCRouter {
        var router = RPCRouter(domainMethods)
        for service in productServices { router.declare(service: service) }
        var served = productServices
        if options.enableTestService {
            router.register(contentsOf: StandardServices.testing())
            served.append(StandardServices.testServiceName)
        }
        router.register(contentsOf: StandardServices.health(knownServices: served, isServing: isServing))
        served.append(StandardServices.healthServiceName)
        let index = try ReflectionIndex.embedded()
        router.register(contentsOf: StandardServices.reflection(services: served, index: index))
        return router
    }
}
