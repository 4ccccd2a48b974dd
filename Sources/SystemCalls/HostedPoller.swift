/// A component with an epoll set of its own (sockets, an eventfd, a timerfd) that another event
/// loop can drive on that loop's thread, instead of running a thread of its own.
///
/// An epoll descriptor is itself readable when any descriptor in its set is ready, so the host
/// watches `pollDescriptor` like a socket and calls `runReady()` when it is readable. The
/// component then does, without blocking, what one turn of its own loop would have done. Work
/// the host thread hands it needs no thread hop, and what it resumes on that thread (the
/// continuations of tasks that prefer the host) runs there without a wake-up.
///
/// Rules: the host calls `runReady` once as soon as it takes the component (so the component
/// knows its thread before anything is ready), and then whenever `pollDescriptor` is readable;
/// `runReady` and `hostEnded` are called on the host's thread only, never concurrently;
/// after `hostEnded` the host never calls again (the component goes on by itself, e.g. on a
/// thread of its own), so nothing is left waiting when the host stops first.
public protocol HostedPoller: AnyObject, Sendable {
    /// Readable while the component has something to do.
    var pollDescriptor: Int32 { get }
    /// Runs what is ready; never blocks.
    func runReady()
    /// The host stops driving this component (its loop is ending, or it could not watch
    /// `pollDescriptor`): the component must go on without it.
    func hostEnded()
}
