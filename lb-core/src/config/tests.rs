use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use super::*;

const MEDICAL: &str = include_str!("../../configs/medical.toml");
const DEFAULT: &str = include_str!("../../configs/default.toml");

fn kinds(errs: &[ValidationError]) -> Vec<ErrorKind> {
    errs.iter().map(|e| e.kind).collect()
}

fn invalid(text: &str) -> Vec<ValidationError> {
    let cfg = parse_toml(text).expect("parses");
    validate(&cfg).expect_err("must be invalid")
}

/// A valid one-service config to mutate in tests.
fn base() -> Config {
    parse_toml(
        r#"
        [[network.interface]]
        name = "eth0"
        address = "10.0.0.2"
        prefix = 24

        [[virtual_service]]
        label = "A"
        vip = "10.0.0.10"
        ports = 104
        forwarding = "dr"

        [[virtual_service.real_server]]
        label = "R1"
        ip = "10.0.0.20"
        "#,
    )
    .unwrap()
}

#[test]
fn medical_example_loads_and_validates() {
    let cfg = from_toml(MEDICAL).unwrap_or_else(|e| panic!("{e}"));
    let labels: Vec<&str> = cfg
        .virtual_services
        .iter()
        .map(|v| v.label.as_str())
        .collect();
    assert_eq!(
        labels,
        [
            "DICOM-Modalities",
            "HL7",
            "XDS-Registry",
            "XDS-Repository",
            "HTTPS-Viewer"
        ]
    );
    let dicom = &cfg.virtual_services[0];
    assert_eq!(dicom.vip, Ipv4Addr::new(10, 12, 1, 100));
    assert_eq!(&*dicom.ports, &[104, 11112]);
    assert_eq!(dicom.protocol, Protocol::Tcp);
    assert_eq!(dicom.forwarding, Forwarding::Dr);
    assert_eq!(dicom.scheduler, SchedulerKind::Wlc);
    assert_eq!(dicom.mode, Mode::LoadBalanced);
    assert_eq!(dicom.persistence_timeout, Some(Secs(3600)));
    assert_eq!(dicom.check_type, CheckType::Connect);
    assert_eq!(dicom.effective_check_port(), 104);
    assert_eq!(dicom.real_servers.len(), 2);
    assert_eq!(dicom.real_servers[0].label, "DICOM1");
    assert_eq!(dicom.real_servers[0].weight, DEFAULT_WEIGHT);
    assert_eq!(dicom.real_servers[1].ip, Ipv4Addr::new(10, 12, 1, 111));
    // DR: the real server sees the port the client used.
    assert_eq!(
        dicom.real_servers[0].target_port(dicom.forwarding, 11112),
        11112
    );
    // An idle DICOM association of 1 h survives: established ≥ 1 h.
    assert!(dicom.established_timeout(&cfg.l4) >= Duration::from_secs(3600));

    let hl7 = &cfg.virtual_services[1];
    assert_eq!(hl7.forwarding, Forwarding::Layer7);
    assert_eq!(hl7.persistence_timeout, Some(Secs(3600)));
    assert_eq!(hl7.client_timeout, Secs(3600));
    assert_eq!(hl7.server_timeout, Secs(3600));
    assert_eq!(hl7.effective_check_port(), 2575);
    assert_eq!(hl7.real_servers[1].port, Some(2575));

    let xds = &cfg.virtual_services[2];
    assert_eq!(xds.forwarding, Forwarding::Nat);
    assert_eq!(xds.vip, Ipv4Addr::new(10, 12, 1, 40));
    // NAT real servers sit on the internal arm, behind the appliance.
    assert_eq!(xds.real_servers[0].ip, Ipv4Addr::new(10, 12, 2, 150));
    assert_eq!(
        cfg.virtual_services[4].real_servers[0].ip,
        Ipv4Addr::new(10, 12, 1, 170)
    );
    assert!(
        cfg.network
            .interfaces
            .iter()
            .any(|i| i.role == InterfaceRole::Internal)
    );
}

#[test]
fn default_config_is_valid_and_forwards_nothing() {
    let cfg = from_toml(DEFAULT).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.virtual_services.is_empty());
    // The vendor guide's factory default address.
    let eth0 = &cfg.network.interfaces[0];
    assert!(!eth0.dhcp);
    assert_eq!(
        eth0.address,
        Some(core::net::Ipv4Addr::new(192, 168, 2, 21))
    );
    assert_eq!(eth0.prefix, Some(24));
    assert!(validate(&Config::empty()).is_ok());
}

#[test]
fn ports_accept_string_array_and_integer() {
    for (spelling, want) in [
        ("\"104,11112\"", vec![104, 11112]),
        ("\"104, 11112\"", vec![104, 11112]),
        ("[104, 11112]", vec![104, 11112]),
        ("104", vec![104]),
    ] {
        let text = alloc::format!(
            "[[virtual_service]]\nlabel=\"A\"\nvip=\"10.0.0.1\"\nports={spelling}\nforwarding=\"snat\"\n"
        );
        let cfg = parse_toml(&text).unwrap();
        assert_eq!(cfg.virtual_services[0].ports.0, want, "{spelling}");
    }
    for bad in ["\"104,x\"", "70000", "[1, 70000]", "\"\"", "-1"] {
        let text = alloc::format!(
            "[[virtual_service]]\nlabel=\"A\"\nvip=\"10.0.0.1\"\nports={bad}\nforwarding=\"snat\"\n"
        );
        assert!(
            matches!(parse_toml(&text), Err(LoadError::Parse(_))),
            "{bad}"
        );
    }
}

#[test]
fn enum_spellings() {
    let text = r#"
        [[virtual_service]]
        label = "A"
        vip = "10.0.0.1"
        ports = 53
        protocol = "UDP"
        forwarding = "direct_routing"
        scheduler = "sh"
        mode = "failover"
        check_type = "none"
    "#;
    let vs = &parse_toml(text).unwrap().virtual_services[0];
    assert_eq!(vs.protocol, Protocol::Udp);
    assert_eq!(vs.forwarding, Forwarding::Dr);
    assert_eq!(vs.scheduler, SchedulerKind::Sh);
    assert_eq!(vs.mode, Mode::Failover);
    assert_eq!(vs.check_type, CheckType::None);
}

#[test]
fn unknown_fields_are_rejected() {
    // A typo must not silently turn persistence off.
    let text = "[[virtual_service]]\nlabel=\"A\"\nvip=\"10.0.0.1\"\nports=1\nforwarding=\"dr\"\npersistance_timeout=3600\n";
    let Err(LoadError::Parse(m)) = parse_toml(text) else {
        panic!("accepted a typo")
    };
    assert!(m.contains("persistance_timeout"), "{m}");
}

#[test]
fn dr_port_mismatch_names_the_path() {
    let mut cfg = from_toml(MEDICAL).unwrap();
    cfg.virtual_services[0].real_servers[0].port = Some(11113);
    let errs = validate(&cfg).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        errs[0].to_string(),
        "virtual_service[DICOM-Modalities].real_server[DICOM1].port: DR real servers must use the virtual service's port (104), got 11113"
    );
    assert_eq!(errs[0].kind, ErrorKind::DrPortMismatch);
    // Setting it to the service port is accepted.
    cfg.virtual_services[0].real_servers[0].port = Some(104);
    assert!(validate(&cfg).is_ok());
}

#[test]
fn all_errors_are_reported_not_just_the_first() {
    let errs = invalid(
        r#"
        [network]
        hostname = ""

        [[virtual_service]]
        label = "A"
        vip = "10.0.0.10"
        ports = "104,104,0"
        forwarding = "nat"
        persistence_timeout = 0
        persistence_netmask = "255.0.255.0"
        check_interval = 0
        check_rise = 0
        check_fall = 0
        check_port = 0
        client_timeout = 0

        [[virtual_service]]
        label = "A"
        vip = "10.0.0.10"
        ports = 104
        forwarding = "dr"

        [[virtual_service.real_server]]
        label = ""
        ip = "10.0.0.20"
        weight = 70000

        [[virtual_service.real_server]]
        label = "R2"
        ip = "10.0.0.10"
        port = 105
        min_connections = 10
        max_connections = 5
        "#,
    );
    let k = kinds(&errs);
    for want in [
        ErrorKind::BadLabel,
        ErrorKind::DuplicateLabel,
        ErrorKind::DuplicateVip,
        ErrorKind::BadPort,
        ErrorKind::NatWithoutInternalNetwork,
        ErrorKind::BadTimeout,
        ErrorKind::BadNetmask,
        ErrorKind::BadRiseFall,
        ErrorKind::Empty,
        ErrorKind::WeightOutOfRange,
        ErrorKind::DrPortMismatch,
        ErrorKind::BadAddress,
        ErrorKind::BadConnectionLimits,
    ] {
        assert!(k.contains(&want), "missing {want:?} in {errs:#?}");
    }
    let text: Vec<_> = errs.iter().map(|e| e.to_string()).collect();
    for want in [
        "network.hostname: ",
        "virtual_service[A].ports: 10.0.0.10:104/tcp is already used by virtual service `A`",
        "virtual_service[A].ports: port 104 is listed twice",
        "virtual_service[A].ports: port 0 is not usable",
        "virtual_service[A].persistence_timeout: must be greater than zero",
        "virtual_service[A].persistence_netmask: 255.0.255.0 is not a netmask",
        "virtual_service[A].check_interval: must be greater than zero",
        "virtual_service[A].check_rise: must be at least 1",
        "virtual_service[A].check_fall: must be at least 1",
        "virtual_service[A].check_port: port 0 is not usable",
        "virtual_service[A].client_timeout: must be greater than zero",
        "virtual_service[A].real_server: a virtual service needs at least one real server",
        "virtual_service[A].label: another virtual service is already labelled `A`",
        "virtual_service[A].real_server[#0].label: must not be empty",
        "virtual_service[A].real_server[#0].weight: must be 0..=65535, got 70000",
        "virtual_service[A].real_server[R2].ip: a real server needs its own address (RIP), not the VIP",
        "virtual_service[A].real_server[R2].port: DR real servers must use the virtual service's port (104), got 105",
        "virtual_service[A].real_server[R2].min_connections: 10 is above max_connections (5)",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(want)),
            "missing `{want}` in {text:#?}"
        );
    }
}

#[test]
fn nat_is_fine_with_an_internal_interface() {
    let mut cfg = base();
    cfg.virtual_services[0].forwarding = Forwarding::Nat;
    assert_eq!(
        kinds(&validate(&cfg).unwrap_err()),
        [ErrorKind::NatWithoutInternalNetwork]
    );
    cfg.network.interfaces.push(Interface {
        name: "eth1".into(),
        dhcp: false,
        address: Some(Ipv4Addr::new(192, 168, 5, 1)),
        prefix: Some(24),
        role: InterfaceRole::Internal,
    });
    assert_eq!(validate(&cfg), Ok(()));
}

#[test]
fn bounds_are_enforced() {
    let mut cfg = base();
    let rs = cfg.virtual_services[0].real_servers[0].clone();
    cfg.virtual_services[0].real_servers = (0..=MAX_REAL_SERVERS)
        .map(|i| RealServer {
            label: alloc::format!("R{i}"),
            ip: Ipv4Addr::from(0x0a00_1000 + i as u32),
            ..rs.clone()
        })
        .collect();
    assert_eq!(kinds(&validate(&cfg).unwrap_err()), [ErrorKind::TooMany]);
    cfg.virtual_services[0]
        .real_servers
        .truncate(MAX_REAL_SERVERS);
    assert_eq!(validate(&cfg), Ok(()));

    let vs = cfg.virtual_services[0].clone();
    cfg.virtual_services = (0..=MAX_VIRTUAL_SERVICES)
        .map(|i| VirtualService {
            label: alloc::format!("S{i}"),
            vip: Ipv4Addr::from(0x0a01_0000 + i as u32),
            ..vs.clone()
        })
        .collect();
    assert_eq!(kinds(&validate(&cfg).unwrap_err()), [ErrorKind::TooMany]);
    cfg.virtual_services.truncate(MAX_VIRTUAL_SERVICES);
    assert_eq!(validate(&cfg), Ok(()));

    let mut cfg = base();
    cfg.virtual_services[0].label = "x".repeat(MAX_LABEL_LEN + 1);
    cfg.virtual_services[0].ports = Ports((1..=MAX_PORTS as u16 + 1).collect());
    cfg.l4.conntrack_capacity = 0;
    cfg.l4.persistence_capacity = MAX_PERSISTENCE_CAPACITY + 1;
    cfg.l4.udp_timeout = Secs(0);
    let k = kinds(&validate(&cfg).unwrap_err());
    assert!(k.contains(&ErrorKind::BadLabel));
    assert!(k.contains(&ErrorKind::TooMany));
    assert_eq!(
        k.iter().filter(|k| **k == ErrorKind::BadCapacity).count(),
        2
    );
    assert!(k.contains(&ErrorKind::BadTimeout));
}

#[test]
fn check_settings_must_match_the_check_type() {
    let mut cfg = base();
    let vs = &mut cfg.virtual_services[0];
    vs.check_called_ae = Some("PACS".into());
    vs.check_request = Some("/health".into());
    let errs = validate(&cfg).unwrap_err();
    assert_eq!(kinds(&errs), [ErrorKind::BadCheck, ErrorKind::BadCheck]);

    let vs = &mut cfg.virtual_services[0];
    vs.check_request = None;
    vs.check_type = CheckType::DicomEcho;
    assert_eq!(validate(&cfg), Ok(()));
    assert_eq!(cfg.virtual_services[0].called_ae(), "PACS");
    assert_eq!(cfg.virtual_services[0].calling_ae(), DEFAULT_CALLING_AE);
    cfg.virtual_services[0].check_calling_ae = Some("THIS-AE-TITLE-IS-TOO-LONG".into());
    assert_eq!(kinds(&validate(&cfg).unwrap_err()), [ErrorKind::BadCheck]);

    let vs = &mut cfg.virtual_services[0];
    vs.check_calling_ae = None;
    vs.check_called_ae = None;
    vs.check_type = CheckType::Hl7;
    vs.check_hl7_message = Some("PID|1".into());
    assert_eq!(kinds(&validate(&cfg).unwrap_err()), [ErrorKind::BadCheck]);
    cfg.virtual_services[0].check_hl7_message =
        Some("MSH|^~\\&|LB|LB|HIS|HIS|20240101||ADT^A01|1|P|2.3".into());
    assert_eq!(validate(&cfg), Ok(()));

    let vs = &mut cfg.virtual_services[0];
    vs.check_hl7_message = None;
    vs.check_type = CheckType::Http;
    vs.check_request = Some("health".into());
    vs.check_timeout = Secs(20);
    let k = kinds(&validate(&cfg).unwrap_err());
    assert_eq!(k, [ErrorKind::BadTimeout, ErrorKind::BadCheck]);
}

#[test]
fn network_settings_are_checked() {
    let mut cfg = base();
    let itf = &mut cfg.network.interfaces[0];
    itf.dhcp = true; // with a static address too
    cfg.network.gateway = Some(Ipv4Addr::BROADCAST);
    cfg.network.dns = vec![Ipv4Addr::UNSPECIFIED];
    cfg.network.interfaces.push(Interface {
        name: "eth0".into(),
        dhcp: false,
        address: None,
        prefix: Some(33),
        role: InterfaceRole::External,
    });
    let text: Vec<_> = validate(&cfg)
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    for want in [
        "network.interface[eth0].address: set either dhcp",
        "network.interface[eth0].name: another interface",
        "network.interface[eth0].address: a static interface needs an address",
        "network.interface[eth0].prefix: prefix length 33 is over 32",
        "network.gateway: ",
        "network.dns[0]: ",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(want)),
            "missing `{want}` in {text:#?}"
        );
    }

    // The gateway must be on a connected subnet; VIPs and real servers are
    // not the appliance's own addresses.
    let mut cfg = base();
    cfg.network.gateway = Some(Ipv4Addr::new(10, 9, 9, 1));
    cfg.virtual_services[0].vip = Ipv4Addr::new(10, 0, 0, 2);
    cfg.virtual_services[0].real_servers[0].ip = Ipv4Addr::new(10, 0, 0, 2);
    let text: Vec<_> = validate(&cfg)
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    for want in [
        "network.gateway: 10.9.9.1 is not on the subnet of any interface",
        "virtual_service[A].vip: 10.0.0.2 is the appliance's own interface address",
        "virtual_service[A].real_server[R1].ip: this is the appliance's own interface address",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(want)),
            "missing `{want}` in {text:#?}"
        );
    }
}

#[test]
fn multi_port_nat_must_not_pin_a_port() {
    let mut cfg = base();
    cfg.virtual_services[0].forwarding = Forwarding::Snat;
    cfg.virtual_services[0].ports = Ports(vec![104, 11112]);
    cfg.virtual_services[0].real_servers[0].port = Some(104);
    assert_eq!(
        kinds(&validate(&cfg).unwrap_err()),
        [ErrorKind::PortOnMultiPortService]
    );
    cfg.virtual_services[0].real_servers[0].port = None;
    assert_eq!(validate(&cfg), Ok(()));
    let rs = &cfg.virtual_services[0].real_servers[0];
    assert_eq!(rs.target_port(Forwarding::Snat, 11112), 11112);
}

#[test]
fn established_timeout_covers_persistence_and_l7() {
    let mut cfg = base();
    cfg.l4.tcp_established_timeout = Secs(600);
    let vs = &mut cfg.virtual_services[0];
    assert_eq!(vs.established_timeout(&cfg.l4), Duration::from_secs(600));
    vs.persistence_timeout = Some(Secs(3600));
    assert_eq!(vs.established_timeout(&cfg.l4), Duration::from_secs(3600));
    vs.forwarding = Forwarding::Layer7;
    vs.server_timeout = Secs(5000);
    assert_eq!(vs.established_timeout(&cfg.l4), Duration::from_secs(5000));
    assert_eq!(vs.persistence_mask(), Some(Ipv4Addr::BROADCAST));
    vs.persistence_netmask = Some(Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(vs.persistence_mask(), Some(Ipv4Addr::new(255, 255, 255, 0)));
    vs.persistence_timeout = None;
    assert_eq!(vs.persistence_mask(), None);
}

#[test]
fn netmask_contiguity() {
    use super::validate::is_contiguous_mask;
    assert!(is_contiguous_mask(Ipv4Addr::new(255, 255, 255, 255)));
    assert!(is_contiguous_mask(Ipv4Addr::new(255, 255, 240, 0)));
    assert!(is_contiguous_mask(Ipv4Addr::new(0, 0, 0, 0)));
    assert!(!is_contiguous_mask(Ipv4Addr::new(255, 0, 255, 0)));
    assert!(!is_contiguous_mask(Ipv4Addr::new(0, 0, 0, 1)));
}

/// `base()` as TOML with extra service fields and one real server's fields.
fn with(service: &str, server: &str) -> String {
    alloc::format!(
        r#"
        [[network.interface]]
        name = "eth0"
        address = "10.0.0.2"
        prefix = 24

        [[virtual_service]]
        label = "A"
        vip = "10.0.0.10"
        ports = 443
        forwarding = "snat"
        {service}

        [[virtual_service.real_server]]
        label = "R1"
        ip = "10.0.0.20"
        {server}
        "#
    )
}

fn errors_of(text: &str) -> Vec<(String, ErrorKind)> {
    invalid(text)
        .into_iter()
        .map(|e| (e.path, e.kind))
        .collect()
}

#[test]
fn fallback_forms() {
    let cfg = from_toml(&with(r#"fallback = { ip = "10.0.0.99", port = 8443 }"#, "")).unwrap();
    assert_eq!(
        cfg.virtual_services[0].fallback,
        Some(Fallback::Server {
            ip: "10.0.0.99".parse().unwrap(),
            port: Some(8443)
        })
    );
    let cfg = from_toml(&with("fallback = \"local\"", "")).unwrap();
    assert_eq!(cfg.virtual_services[0].fallback, Some(Fallback::Local));
    // Both survive the wire format.
    let blob = crate::envelope::encode(&cfg).unwrap();
    assert_eq!(crate::envelope::decode(&blob).unwrap(), cfg);
    assert!(parse_toml(&with("fallback = \"elsewhere\"", "")).is_err());
    assert!(parse_toml(&with("fallback = { ip = \"10.0.0.99\", prt = 1 }", "")).is_err());
    assert_eq!(
        errors_of(&with(r#"fallback = { ip = "10.0.0.10" }"#, "")),
        [(
            "virtual_service[A].fallback.ip".into(),
            ErrorKind::BadAddress
        )]
    );
    assert!(parse_toml(&with("fallback_page = \"x\"", "")).is_err());
}

#[test]
fn fallback_page_form_and_bounds() {
    let cfg = from_toml(&with(r#"fallback = { page = "<h1>Back soon</h1>" }"#, "")).unwrap();
    assert_eq!(
        cfg.virtual_services[0].fallback,
        Some(Fallback::Page("<h1>Back soon</h1>".into()))
    );
    let blob = crate::envelope::encode(&cfg).unwrap();
    assert_eq!(crate::envelope::decode(&blob).unwrap(), cfg);
    // A server and a page at once is no fallback.
    assert!(parse_toml(&with(r#"fallback = { ip = "10.0.0.99", page = "x" }"#, "")).is_err());
    assert!(parse_toml(&with(r#"fallback = { }"#, "")).is_err());
    let long = alloc::format!(
        r#"fallback = {{ page = "{}" }}"#,
        "x".repeat(MAX_FALLBACK_PAGE + 1)
    );
    assert_eq!(
        errors_of(&with(&long, "")),
        [(
            "virtual_service[A].fallback.page".into(),
            ErrorKind::TooMany
        )]
    );
    assert_eq!(
        errors_of(&with(r#"fallback = { page = "" }"#, "")),
        [(
            "virtual_service[A].fallback.page".into(),
            ErrorKind::TooMany
        )]
    );
    // The layer 7 relay takes a fallback server or "local", not a page.
    let l7 = with(r#"fallback = { page = "x" }"#, "").replace("\"snat\"", "\"layer7\"");
    assert_eq!(
        errors_of(&l7),
        [(
            "virtual_service[A].fallback.page".into(),
            ErrorKind::BadLayer7Option
        )]
    );
}

#[test]
fn tls_settings_are_checked() {
    let ca = include_str!("../../testdata/health/tls/ca.pem");
    let pin = include_str!("../../testdata/health/tls/rsa.sha256").trim();
    let ok = [
        alloc::format!(
            "check_type = \"https\"\ncheck_tls_verify = \"ca\"\ncheck_tls_ca = '''\n{ca}'''\ncheck_tls_name = \"viewer.test\""
        ),
        alloc::format!(
            "check_type = \"https\"\ncheck_tls_verify = \"pin\"\ncheck_tls_pin = \"{pin}\""
        ),
        "check_type = \"https\"".into(),
    ];
    for s in &ok {
        from_toml(&with(s, "")).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let cases: &[(&str, &str)] = &[
        (
            "check_type = \"https\"\ncheck_tls_verify = \"ca\"",
            "check_tls_ca",
        ),
        (
            "check_type = \"https\"\ncheck_tls_verify = \"pin\"",
            "check_tls_pin",
        ),
        (
            "check_type = \"https\"\ncheck_tls_verify = \"pin\"\ncheck_tls_pin = \"abc\"",
            "check_tls_pin",
        ),
        (
            "check_type = \"https\"\ncheck_tls_verify = \"ca\"\ncheck_tls_ca = \"not pem\"",
            "check_tls_ca",
        ),
        (
            "check_type = \"https\"\ncheck_tls_pin = \"00\"",
            "check_tls_pin",
        ),
        (
            "check_type = \"https\"\ncheck_tls_name = \"a b\"",
            "check_tls_name",
        ),
        (
            "check_type = \"http\"\ncheck_tls_verify = \"ca\"",
            "check_tls_verify",
        ),
    ];
    for (s, field) in cases {
        let errs = errors_of(&with(s, ""));
        assert!(
            errs.iter()
                .any(|(p, k)| *p == alloc::format!("virtual_service[A].{field}")
                    && *k == ErrorKind::BadCheck),
            "{s}: {errs:?}"
        );
    }
}

#[test]
fn check_types_ports_agent_and_hl7_prefix() {
    for t in ["ping", "none", "off"] {
        from_toml(&with(
            &alloc::format!("check_type = \"{t}\""),
            "agent_port = 3333",
        ))
        .unwrap();
    }
    let cfg = from_toml(&with("", "check_port = 8443\nagent_port = 3333")).unwrap();
    let rs = &cfg.virtual_services[0].real_servers[0];
    assert_eq!((rs.check_port, rs.agent_port), (Some(8443), Some(3333)));
    assert_eq!(
        errors_of(&with("check_type = \"ping\"", "check_port = 1")),
        [(
            "virtual_service[A].real_server[R1].check_port".into(),
            ErrorKind::BadCheck
        )]
    );
    assert_eq!(
        errors_of(&with("", "agent_port = 0")),
        [(
            "virtual_service[A].real_server[R1].agent_port".into(),
            ErrorKind::BadPort
        )]
    );
    let cfg = from_toml(&with(
        "check_type = \"hl7\"\ncheck_hl7_control_id_prefix = \"LBMON-\"",
        "",
    ))
    .unwrap();
    assert_eq!(cfg.virtual_services[0].hl7_control_id_prefix(), "LBMON-");
    assert_eq!(
        errors_of(&with(
            "check_type = \"hl7\"\ncheck_hl7_control_id_prefix = \"TOO-LONG-PREFIX\"",
            ""
        )),
        [(
            "virtual_service[A].check_hl7_control_id_prefix".into(),
            ErrorKind::BadCheck
        )]
    );
}

#[test]
fn management_section_parses_and_is_checked() {
    let key = crate::mgmt::keys::SigningKey::from_seed([5; 32])
        .public()
        .to_string();
    let text = alloc::format!(
        "{MEDICAL}\n[management]\naddress = \"eth0\"\nallow = [\"10.12.1.0/24\", \"10.12.9.7\"]\nadmin_keys = [\"{key}\"]\nsyslog = \"10.12.1.5:514\"\n"
    );
    let cfg = from_toml(&text).unwrap();
    assert_eq!(cfg.management.allow.as_ref().unwrap().len(), 2);
    assert_eq!(cfg.management.syslog.unwrap().port(), 514);
    assert_eq!(cfg.management.serial, 0);
    // Survives the wire form.
    let blob = crate::envelope::encode(&cfg).unwrap();
    assert_eq!(crate::envelope::decode(&blob).unwrap(), cfg);

    let mut bad = cfg.clone();
    bad.management.address = Some("10.99.0.1".into());
    bad.management.allow = Some(vec!["10.12.1.5/24".into(), "nonsense".into()]);
    bad.management.admin_keys = vec![key.clone(), key.clone(), "ed25519:00".into()];
    bad.management.syslog = Some("10.12.1.5:0".parse().unwrap());
    let errs = validate(&bad).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "management.address",
            "management.allow[0]",
            "management.allow[1]",
            "management.admin_keys[1]",
            "management.admin_keys[2]",
            "management.syslog"
        ]
    );
    let mut ok = cfg.clone();
    ok.management.address = Some("10.12.1.21".into());
    assert_eq!(validate(&ok), Ok(()));
    assert!(
        parse_toml(&alloc::format!(
            "{MEDICAL}\n[management]\nallow_list = []\n"
        ))
        .is_err()
    );
}

#[test]
fn demo_config_is_valid_and_balances_two_pacs() {
    let cfg = from_toml(include_str!("../../configs/demo.toml")).unwrap_or_else(|e| panic!("{e}"));
    let vs = &cfg.virtual_services[0];
    assert_eq!((vs.label.as_str(), vs.real_servers.len()), ("DICOM", 2));
    assert_eq!(vs.check_type, CheckType::DicomEcho);
    assert!(cfg.management.admin_keys.is_empty());
}

#[test]
fn protocol_awareness_is_validated() {
    let cfg = parse_toml(include_str!("../../testdata/aware/services.toml")).unwrap();
    assert_eq!(validate(&cfg), Ok(()));
    assert_eq!(
        cfg.virtual_services[1].hl7_routes[0].receiving_facility,
        "*"
    );

    let mut bad = cfg.clone();
    let vs = &mut bad.virtual_services[0];
    vs.forwarding = Forwarding::Nat;
    vs.ae_routes[0].servers.push("NOPE".into());
    vs.ae_routes[1].called_ae = "A*B".into();
    bad.virtual_services[1].persistence = PersistenceKey::CallingAe;
    bad.virtual_services[1].ae_routes = cfg.virtual_services[0].ae_routes.clone();
    let errs = validate(&bad).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"virtual_service[PACS].protocol_aware"),
        "{errs:?}"
    );
    assert!(
        paths.contains(&"virtual_service[PACS].ae_route[0].servers"),
        "{errs:?}"
    );
    assert!(
        paths.contains(&"virtual_service[PACS].ae_route[1]"),
        "{errs:?}"
    );
    assert!(
        paths.contains(&"virtual_service[HL7].persistence"),
        "{errs:?}"
    );
    assert!(paths.contains(&"virtual_service[HL7].ae_route"), "{errs:?}");
    assert!(
        paths.contains(&"virtual_service[HL7].ae_route[0].servers"),
        "{errs:?}"
    );
}

#[test]
fn misspelt_keys_inside_routes_are_refused_not_dropped() {
    let good = include_str!("../../testdata/aware/services.toml");
    for (right, wrong) in [
        (
            "called_ae = \"PACS_A\"",
            "called_ae = \"PACS_A\"\nrewrite_caled_ae = \"X\"",
        ),
        (
            "receiving_application = \"LAB\"",
            "receiving_application = \"LAB\"\nreceiving_facilty = \"ER\"",
        ),
    ] {
        assert!(good.contains(right));
        let err = parse_toml(&good.replacen(right, wrong, 1)).unwrap_err();
        let text = alloc::format!("{err}");
        assert!(text.contains("unknown field"), "{text}");
    }
}

#[test]
fn presets_fill_the_guide_values_and_explicit_fields_win() {
    let text = |preset: &str, extra: &str| {
        alloc::format!(
            r#"
        [[network.interface]]
        name = "eth0"
        address = "10.0.0.2"
        prefix = 24
        [[network.interface]]
        name = "eth1"
        address = "10.1.0.1"
        prefix = 24
        role = "internal"

        [[virtual_service]]
        label = "S"
        vip = "10.0.0.10"
        preset = "{preset}"
        {extra}
        [[virtual_service.real_server]]
        label = "R1"
        ip = "10.1.0.20"
        "#
        )
    };
    let hl7 = from_toml(&text("hl7", "")).unwrap();
    let vs = &hl7.virtual_services[0];
    assert_eq!(vs.ports.to_vec(), [2575]);
    assert_eq!(vs.forwarding, Forwarding::Layer7);
    assert_eq!(vs.check_type, CheckType::Hl7);
    assert_eq!(vs.persistence_timeout, Some(Secs(3600)));
    assert_eq!(
        (vs.client_timeout, vs.server_timeout),
        (Secs(3600), Secs(3600))
    );
    let dicom = from_toml(&text("dicom", "ports = 4242\nprotocol_aware = \"none\"")).unwrap();
    let vs = &dicom.virtual_services[0];
    assert_eq!(vs.ports.to_vec(), [4242], "explicit fields win");
    assert_eq!(vs.forwarding, Forwarding::Dr);
    assert_eq!(vs.check_type, CheckType::DicomEcho);
    let xds = from_toml(&text("xds", "")).unwrap();
    assert_eq!(xds.virtual_services[0].forwarding, Forwarding::Nat);
    let https = from_toml(&text("https", "")).unwrap();
    assert_eq!(https.virtual_services[0].ports.to_vec(), [443]);
    assert_eq!(https.virtual_services[0].check_type, CheckType::Https);
    let err = from_toml(&text("pacs", "")).unwrap_err().to_string();
    assert!(
        err.contains("virtual_service[S].preset: pacs is not one of dicom, hl7, xds, https"),
        "{err}"
    );
    // Without presets, parse errors keep their line.
    let err = parse_toml("[[virtual_service]]\nlabel = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
}
