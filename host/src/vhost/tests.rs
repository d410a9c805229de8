use super::*;

fn vhosts(toml: &str) -> Vhosts {
    let config = Config::from_toml(toml).unwrap();
    Vhosts::build(&config, None, MemoryBudget::unlimited())
}

#[test]
fn without_vhosts_every_host_enters_the_one_vhost() {
    let all = vhosts("");
    assert_eq!(all.len(), 1);
    for host in [None, Some(&b"/"[..]), Some(b"anything"), Some(b"")] {
        assert_eq!(&*all.select(host).unwrap().name, "/");
    }
}

#[test]
fn a_host_names_its_vhost_exactly() {
    let two = vhosts("[[vhosts]]\nname = \"a\"\n[[vhosts]]\nname = \"b\"\n");
    assert_eq!(&*two.select(Some(b"a")).unwrap().name, "a");
    assert_eq!(two.select(Some(b"b")).unwrap().index, 1);
    assert_eq!(
        two.select(Some(b"A")).unwrap_err(),
        SelectError::Unknown("A".into())
    );
    assert_eq!(two.select(None).unwrap_err(), SelectError::Absent);
    assert!(two.get("a").is_some() && two.get("c").is_none());
}

#[test]
fn the_default_vhost_takes_unknown_and_absent_hosts() {
    let two = vhosts("default_vhost = \"b\"\n[[vhosts]]\nname = \"a\"\n[[vhosts]]\nname = \"b\"\n");
    assert_eq!(&*two.select(Some(b"zzz")).unwrap().name, "b");
    assert_eq!(&*two.select(None).unwrap().name, "b");
    assert_eq!(&*two.select(Some(b"a")).unwrap().name, "a");
}

#[test]
fn the_destination_cap_counts_every_vhost() {
    let two = vhosts(
        "[limits]\nmax_destinations = 1\n[[vhosts]]\nname = \"a\"\n[[vhosts]]\nname = \"b\"\n",
    );
    let name = Bytes::from_static(b"/queue/q");
    let mut conn = crate::router::Connection::new(Arc::from("c-1"));
    let a = &two.get("a").unwrap().router;
    let b = &two.get("b").unwrap().router;
    assert!(a.resolve(&mut conn, &name).unwrap().is_some());
    let mut conn = crate::router::Connection::new(Arc::from("c-2"));
    assert!(matches!(
        b.resolve(&mut conn, &name),
        Err(crate::router::RouteError::TooManyDestinations(..))
    ));
    assert_eq!(two.counts(), (1, 0));
}

#[test]
fn only_the_default_vhost_journals_without_a_name() {
    assert!(Vhost::journal_name("/").is_empty());
    assert_eq!(&Vhost::journal_name("a")[..], b"a");
}
