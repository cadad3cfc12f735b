//! Backups (PRODUCT 4.6): before a peer's version replaces or deletes a
//! regular file, the old one is kept, exactly N generations, rotated.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::sync::Cluster;

const CFG: &str = "
group g {
    host n1@@ADDR_n1@ n2@@ADDR_n2@ n3@@ADDR_n3@;
    key csync2.key;
    include %p%;
    backup-directory @BACKUP@;
    backup-generations 4;
}
prefix p { on n1: @ROOT_n1@; on n2: @ROOT_n2@; on n3: @ROOT_n3@; }
";

#[test]
fn six_changes_keep_exactly_the_four_previous_versions_in_order() {
    let mut c =
        Cluster::new("six_changes_keep_exactly_the_four_previous_versions_in_order", "none");
    for n in ["n1", "n2", "n3"] {
        let dir = c.net.path(&format!("backups-{n}"));
        c.net.write_config_for(n, &CFG.replace("@BACKUP@", dir.to_str().unwrap()));
        // A daemon reads its config at start.
        c.stop(n);
        c.start(n);
    }
    for v in 1..=6 {
        c.write("n1", "etc/app.conf", format!("version {v}\n").as_bytes());
        fs::set_permissions(c.root("n1").join("etc/app.conf"), fs::Permissions::from_mode(0o640))
            .unwrap();
        c.x_ok("n1");
    }
    assert_eq!(fs::read(c.root("n2").join("etc/app.conf")).unwrap(), b"version 6\n");
    let store = c.net.path("backups-n2").join("%p%/etc");
    let mut names: Vec<String> = fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["app.conf.1", "app.conf.2", "app.conf.3", "app.conf.4"]);
    for (k, v) in [(1, 5), (2, 4), (3, 3), (4, 2)] {
        let p = store.join(format!("app.conf.{k}"));
        assert_eq!(fs::read_to_string(&p).unwrap(), format!("version {v}\n"), "generation {k}");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640, "mode kept");
    }
    // A delete keeps the last version too.
    fs::remove_file(c.root("n1").join("etc/app.conf")).unwrap();
    c.x_ok("n1");
    assert!(!c.root("n2").join("etc/app.conf").exists());
    assert_eq!(fs::read_to_string(store.join("app.conf.1")).unwrap(), "version 6\n");
    assert_eq!(fs::read_to_string(store.join("app.conf.4")).unwrap(), "version 3\n");
    assert!(!store.join("app.conf.5").exists());
}
