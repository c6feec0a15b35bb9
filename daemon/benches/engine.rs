//! The engine alone, in-process (no transport): one mediated read decision and its
//! report, as the shared-memory channel thread runs them. The component under every
//! transport's number in `trace2e-benches` (`cargo bench -p trace2e-daemon --bench engine`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use trace2e_daemon::engine::{Engine, EngineConfig, ProcessInfo};
use trace2e_daemon::topology::Topology;
use trace2e_proto::wire::{WireRequest, WireResponse};
use trace2e_proto::{Decision, Direction, Fd, IoOutcome, NodeId, ProcessId, Resource};

fn engine_with_reader() -> (Arc<Engine>, ProcessId) {
    let node = NodeId::new("bench").unwrap();
    let engine = Arc::new(Engine::new(EngineConfig::new(Topology::new(node, vec!["10.0.0.1".parse().unwrap()]))));
    let id = ProcessId { pid: 4242, starttime: 1 };
    engine.attach_process(ProcessInfo { id, exe: "/bin/bench".into(), uid: trace2e_daemon::enrollment::UserId(1000) });
    engine.enroll(id, Fd(3), Resource::file("/data/input.txt").unwrap()).unwrap();
    (engine, id)
}

fn decide(engine: &Engine, process: ProcessId, direction: Direction) -> Decision {
    engine.try_request(process, Fd(3), direction).unwrap().expect("an uncontended decision waited")
}

fn engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    for direction in [Direction::Read, Direction::Write] {
        let (engine, process) = engine_with_reader();
        let name = if direction == Direction::Read { "read" } else { "write" };
        group.bench_function(format!("{name}_request_report"), |b| {
            b.iter(|| {
                let Decision::Grant(grant) = decide(&engine, process, direction) else { panic!("denied") };
                engine.report(process, black_box(grant), IoOutcome { ok: true, bytes: 64 }).unwrap();
            })
        });
    }
    group.bench_function("wire_request_codec", |b| {
        let mut buf = Vec::new();
        b.iter(|| {
            let kind = WireRequest::Request { fd: Fd(3), direction: Direction::Read }.encode(&mut buf);
            let decoded = WireRequest::decode(kind, &buf).unwrap();
            let kind = WireResponse::Decision(Decision::Grant(trace2e_proto::GrantId(7))).encode(&mut buf);
            black_box((decoded, kind))
        })
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
