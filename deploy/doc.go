// Package deploy holds no code: it is the home of the deployment files
// (docker-compose.yml at the repository root, the Dockerfile, and the
// server configurations under deploy/), and its tests check them against
// the real loaders — the Compose specification's own Go loader, hubd's and
// btcd's flag parsers, nats-server's config parser and a real redis-server —
// since no Docker engine runs where the tests do.
package deploy
