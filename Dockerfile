# trace2e: one image with the daemon (trace2ed), the operator CLI (trace2e) and the demo
# process tool (trace2e-proc). protoc is vendored by the build, so only Rust is needed.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
COPY --from=build /src/target/release/trace2ed /src/target/release/trace2e /src/target/release/trace2e-proc /usr/local/bin/
RUN mkdir -p /run/trace2e /data
# M2M (federation), as docker-compose.yml configures it; P2M and O2M are Unix sockets.
EXPOSE 7100
ENTRYPOINT ["trace2ed"]
