package megaio

// Version is this release of the package (CHANGELOG.md). Versions are v0.x:
// the Go API may still change between minor versions; the queue ABI is
// versioned on its own (ABIVersion).
const Version = "v0.12.0"

// ABIVersion is the queue ABI this release speaks: MEGAIO_ABI_VERSION in
// include/megaio.h, which producers are built against. A queue of another
// ABI version is refused (AttachQueue, megaio_attach); the ABI changes only
// with a new version number, and the header argues every rule of it.
const ABIVersion = abiVersion
