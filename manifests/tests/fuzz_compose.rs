//! Property tests over generated inputs (the fuzzing of issue 10): the compose reader with
//! interpolation, and the YAML front end, never panic and stay bounded, whatever they are fed.
//! CI runs the default number of cases; `PROPTEST_CASES=100000 cargo test -p manifests --test
//! fuzz_compose --release` runs them for several CPU-minutes.

use std::collections::BTreeMap;

use manifests::compose::interpolate::{self, Value};
use proptest::prelude::*;
use serde_json::{Map, Value as Json};

/// Strings made of the characters interpolation cares about, plus a few letters.
fn template() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("$".to_string()),
            Just("{".to_string()),
            Just("}".to_string()),
            Just(":".to_string()),
            Just("-".to_string()),
            Just("?".to_string()),
            Just("+".to_string()),
            Just("A".to_string()),
            Just("_B1".to_string()),
            Just("${A}".to_string()),
            Just("${A:-x}".to_string()),
            Just("$$".to_string()),
            Just("8080".to_string()),
            Just("/".to_string()),
            Just(" ".to_string()),
            "[a-z0-9é\\\\'\"]{0,3}",
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "tmpfs",
    "networks",
    "network_mode",
    "depends_on",
    "healthcheck",
    "restart",
    "user",
    "labels",
    "deploy",
    "ulimits",
    "extra_hosts",
    "sysctls",
    "secrets",
    "configs",
    "devices",
    "stop_grace_period",
    "shm_size",
    "init",
    "read_only",
    "profiles",
    "extends",
    "links",
    "volumes_from",
    "mem_limit",
    "cpus",
    "x-ext",
    "bogus",
];

fn scalar() -> impl Strategy<Value = Json> {
    prop_oneof![
        template().prop_map(Json::String),
        any::<i64>().prop_map(Json::from),
        any::<bool>().prop_map(Json::Bool),
        Just(Json::Null),
        Just(Json::String("a:/b:ro".into())),
        Just(Json::String("127.0.0.1:${P:-80}:80/tcp".into())),
    ]
}

fn node() -> impl Strategy<Value = Json> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("test".to_string()),
                    Just("target".to_string()),
                    Just("source".to_string()),
                    Just("type".to_string()),
                    Just("condition".to_string()),
                    "[a-z_]{1,6}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn compose() -> impl Strategy<Value = Json> {
    let service = proptest::collection::btree_map(proptest::sample::select(SERVICE_KEYS), node(), 0..8);
    let services = proptest::collection::btree_map("[a-c]{1,2}", service, 0..4);
    let tops = proptest::collection::btree_map(
        prop_oneof![Just("volumes"), Just("networks"), Just("secrets"), Just("configs")],
        proptest::collection::btree_map("[a-c]{1,2}", node(), 0..3),
        0..3,
    );
    (services, tops).prop_map(|(services, tops)| {
        let mut root = Map::new();
        root.insert("x-bundle".into(), serde_json::json!({"product": "p"}));
        root.insert(
            "services".into(),
            Json::Object(
                services
                    .into_iter()
                    .map(|(n, s)| (n, Json::Object(s.into_iter().map(|(k, v)| (k.to_string(), v)).collect())))
                    .collect(),
            ),
        );
        for (k, v) in tops {
            root.insert(k.to_string(), Json::Object(v.into_iter().collect()));
        }
        Json::Object(root)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Parsing and evaluating any template terminates without a panic; a template that parses
    /// evaluates with every variable known, and writing it back keeps its meaning.
    #[test]
    fn interpolation_never_panics(s in template(), a in "[a-z]{0,3}") {
        if let Ok(t) = interpolate::parse(&s) {
            let values = BTreeMap::from([("A".to_string(), a.clone())]);
            let lookup = |n: &str| values.get(n).map_or(Value::Unset, |v| Value::Set(v.clone()));
            let direct = t.eval(&lookup);
            let _ = t.eval(&|_| Value::Unknown);
            let _ = t.references();
            let written = t.render_with(&|_| None);
            let again = interpolate::parse(&written).expect("a written template parses");
            prop_assert_eq!(again.eval(&lookup), direct);
        }
    }

    /// The whole bundle-time reader (YAML, extends, profiles, pinning, variables, every service
    /// key) on generated compose files: problems or a stack, never a panic.
    #[test]
    fn the_compose_reader_never_panics(doc in compose()) {
        let text = serde_json::to_string(&doc).unwrap();
        let dir = std::env::temp_dir();
        let _ = manifests::compose::prepare::prepare(&text, "compose.yaml", &dir, &manifests::compose::LoadOptions::default());
    }

    /// The YAML front end on arbitrary text.
    #[test]
    fn yaml_never_panics(s in "[ a-z:&*<{}\\[\\],\\-#'\"\n]{0,200}") {
        let _ = manifests::compose::yaml::parse(&s);
        let _ = manifests::compose::yaml::locate(&s, "services.a.b[0]");
    }
}
