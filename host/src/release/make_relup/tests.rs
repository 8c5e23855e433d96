use super::*;

/// An application version of a synthetic root.
#[derive(Clone, Copy)]
struct AppV {
    name: &'static str,
    vsn: &'static str,
    modules: &'static [&'static str],
    includes: &'static [&'static str],
}

const fn app(name: &'static str, vsn: &'static str, modules: &'static [&'static str]) -> AppV {
    AppV { name, vsn, modules, includes: &[] }
}

/// Application `a`: version 2 drops module `x` and adds `n`.
const A1: AppV = app("a", "1", &["m1", "m2", "m3", "x"]);
const A2: AppV = app("a", "2", &["m1", "m2", "m3", "n"]);
const B1: AppV = app("b", "1", &["b1", "b2"]);
const C1: AppV = app("c", "1", &["c1"]);

/// A root laid out as SPEC §6 with `releases` (the first permanent), their `.rel` files,
/// RELEASES, each application's `.app` (no `.so`: making a relup never reads one), and
/// `appups`: `(app-vsn, text)`, written to `lib/<app-vsn>/<app>.appup`.
fn root(releases: &[(&str, &[AppV])], appups: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::Builder::new().prefix("make-relup-").tempdir().expect("temp dir");
    let r = root.path();
    let mut entries = Vec::new();
    for (index, (vsn, apps)) in releases.iter().enumerate() {
        for a in apps.iter() {
            let dir = r.join("lib").join(format!("{}-{}", a.name, a.vsn));
            std::fs::create_dir_all(&dir).expect("lib dir");
            let spec = format!(
                "{{application, {}, [{{vsn, \"{}\"}}, {{modules, [{}]}}, \
                 {{included_applications, [{}]}}]}}.\n",
                a.name,
                a.vsn,
                a.modules.join(", "),
                a.includes.join(", ")
            );
            std::fs::write(dir.join(format!("{}.app", a.name)), spec).expect(".app");
        }
        let dir = r.join("releases").join(vsn);
        std::fs::create_dir_all(&dir).expect("release dir");
        let rel_apps: Vec<String> =
            apps.iter().map(|a| format!("{{{}, \"{}\"}}", a.name, a.vsn)).collect();
        let rel = format!(
            "{{release, {{\"r\", \"{vsn}\"}}, {{hotcode, \"0.1.0\"}}, [{}]}}.\n",
            rel_apps.join(", ")
        );
        std::fs::write(dir.join("r.rel"), rel).expect(".rel");
        let libs: Vec<String> = apps
            .iter()
            .map(|a| format!("{{{}, \"{}\", \"lib/{}-{}\"}}", a.name, a.vsn, a.name, a.vsn))
            .collect();
        let status = if index == 0 { "permanent" } else { "unpacked" };
        entries.push(format!(
            "{{release, \"r\", \"{vsn}\", \"0.1.0\", [{}], {status}}}",
            libs.join(", ")
        ));
    }
    std::fs::write(r.join("releases/RELEASES"), format!("[{}].\n", entries.join(",\n ")))
        .expect("RELEASES");
    for (app_vsn, text) in appups {
        let app = app_vsn.rsplit_once('-').map_or(*app_vsn, |(app, _)| app);
        std::fs::write(r.join("lib").join(app_vsn).join(format!("{app}.appup")), text)
            .expect(".appup");
    }
    root
}

/// The root of most cases: release "1" with `a` 1, release "2" with `a` 2, whose appup
/// has `up` as its entry from "1" and `down` as its entry to "1".
fn a_root(up: &str, down: &str) -> tempfile::TempDir {
    let appup = format!("{{\"2\",\n [{{\"1\", [{up}]}}],\n [{{\"1\", [{down}]}}]}}.\n");
    root(&[("1", &[A1]), ("2", &[A2])], &[("a-2", &appup)])
}

/// The up and down scripts of the relup from "1" to "2", one instruction per string.
fn scripts(root: &Path) -> (Vec<String>, Vec<String>) {
    let relup = make_relup(root, "1", "2").unwrap_or_else(|e| panic!("{e}"));
    let text = |entry: &RelupEntry| {
        entry.instructions.iter().map(|i| i.value.to_string()).collect::<Vec<_>>()
    };
    assert_eq!((relup.up.len(), relup.down.len()), (1, 1));
    (text(&relup.up[0]), text(&relup.down[0]))
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// Every high-level instruction, written in the up entry and the down entry, with the
/// exact scripts expected: `(case, up entry, down entry, up script, down script)`.
const TRANSLATIONS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "update advanced: code_change after the load up, before it down",
        "{update, m1, {advanced, x}}",
        "{update, m1, {advanced, x}}",
        r#"{load_object_code,{a,"2",[m1]}}
           point_of_no_return
           {suspend,[m1]}
           {load,{m1,brutal_purge,brutal_purge}}
           {code_change,up,[{m1,x}]}
           {resume,[m1]}"#,
        r#"{load_object_code,{a,"1",[m1]}}
           point_of_no_return
           {suspend,[m1]}
           {code_change,down,[{m1,x}]}
           {load,{m1,brutal_purge,brutal_purge}}
           {resume,[m1]}"#,
    ),
    (
        "update soft (the default change): suspend, load, resume, no code_change",
        "{update, m1}",
        "{update, m1, soft}",
        r#"{load_object_code,{a,"2",[m1]}}
           point_of_no_return
           {suspend,[m1]}
           {load,{m1,brutal_purge,brutal_purge}}
           {resume,[m1]}"#,
        r#"{load_object_code,{a,"1",[m1]}}
           point_of_no_return
           {suspend,[m1]}
           {load,{m1,brutal_purge,brutal_purge}}
           {resume,[m1]}"#,
    ),
    (
        "update supervisor: static with Extra [], so loaded first both ways",
        "{update, m1, supervisor}",
        "{update, m1, supervisor}",
        r#"{load_object_code,{a,"2",[m1]}}
           point_of_no_return
           {suspend,[m1]}
           {load,{m1,brutal_purge,brutal_purge}}
           {code_change,up,[{m1,[]}]}
           {resume,[m1]}"#,
        r#"{load_object_code,{a,"1",[m1]}}
           point_of_no_return
           {suspend,[m1]}
           {load,{m1,brutal_purge,brutal_purge}}
           {code_change,down,[{m1,[]}]}
           {resume,[m1]}"#,
    ),
    (
        "update with every field: ModType, Timeout, purge methods",
        "{update, m1, static, 100, {advanced, [1]}, soft_purge, soft_purge, []}",
        "{update, m1, dynamic, infinity, {advanced, [1]}, brutal_purge, soft_purge, []}",
        r#"{load_object_code,{a,"2",[m1]}}
           point_of_no_return
           {suspend,[{m1,100}]}
           {load,{m1,soft_purge,soft_purge}}
           {code_change,up,[{m1,[1]}]}
           {resume,[m1]}"#,
        r#"{load_object_code,{a,"1",[m1]}}
           point_of_no_return
           {suspend,[{m1,infinity}]}
           {code_change,down,[{m1,[1]}]}
           {load,{m1,brutal_purge,soft_purge}}
           {resume,[m1]}"#,
    ),
    (
        "update with a Timeout and a soft change",
        "{update, m1, 2000, soft, brutal_purge, brutal_purge, []}",
        "{update, m1, {advanced, []}, []}",
        r#"{load_object_code,{a,"2",[m1]}}
           point_of_no_return
           {suspend,[{m1,2000}]}
           {load,{m1,brutal_purge,brutal_purge}}
           {resume,[m1]}"#,
        r#"{load_object_code,{a,"1",[m1]}}
           point_of_no_return
           {suspend,[m1]}
           {code_change,down,[{m1,[]}]}
           {load,{m1,brutal_purge,brutal_purge}}
           {resume,[m1]}"#,
    ),
    (
        "load_module: just a load",
        "{load_module, m1}",
        "{load_module, m1, soft_purge, brutal_purge, []}",
        r#"{load_object_code,{a,"2",[m1]}}
           point_of_no_return
           {load,{m1,brutal_purge,brutal_purge}}"#,
        r#"{load_object_code,{a,"1",[m1]}}
           point_of_no_return
           {load,{m1,soft_purge,brutal_purge}}"#,
    ),
    (
        "add_module up is delete_module down",
        "{add_module, n}",
        "{delete_module, n}",
        r#"{load_object_code,{a,"2",[n]}}
           point_of_no_return
           {load,{n,brutal_purge,brutal_purge}}"#,
        r#"point_of_no_return
           {remove,{n,brutal_purge,brutal_purge}}
           {purge,[n]}"#,
    ),
    (
        "delete_module up is add_module down",
        "{delete_module, x, []}",
        "{add_module, x, []}",
        r#"point_of_no_return
           {remove,{x,brutal_purge,brutal_purge}}
           {purge,[x]}"#,
        r#"{load_object_code,{a,"1",[x]}}
           point_of_no_return
           {load,{x,brutal_purge,brutal_purge}}"#,
    ),
    (
        "restart_application: stop, old modules out, new ones in, start",
        "{restart_application, a}",
        "{restart_application, a}",
        r#"{load_object_code,{a,"2",[m1,m2,m3,n]}}
           point_of_no_return
           {apply,{application,stop,[a]}}
           {remove,{m1,brutal_purge,brutal_purge}}
           {remove,{m2,brutal_purge,brutal_purge}}
           {remove,{m3,brutal_purge,brutal_purge}}
           {remove,{x,brutal_purge,brutal_purge}}
           {purge,[m1,m2,m3,x]}
           {load,{m1,brutal_purge,brutal_purge}}
           {load,{m2,brutal_purge,brutal_purge}}
           {load,{m3,brutal_purge,brutal_purge}}
           {load,{n,brutal_purge,brutal_purge}}
           {apply,{application,start,[a,permanent]}}"#,
        r#"{load_object_code,{a,"1",[m1,m2,m3,x]}}
           point_of_no_return
           {apply,{application,stop,[a]}}
           {remove,{m1,brutal_purge,brutal_purge}}
           {remove,{m2,brutal_purge,brutal_purge}}
           {remove,{m3,brutal_purge,brutal_purge}}
           {remove,{n,brutal_purge,brutal_purge}}
           {purge,[m1,m2,m3,n]}
           {load,{m1,brutal_purge,brutal_purge}}
           {load,{m2,brutal_purge,brutal_purge}}
           {load,{m3,brutal_purge,brutal_purge}}
           {load,{x,brutal_purge,brutal_purge}}
           {apply,{application,start,[a,permanent]}}"#,
    ),
    (
        "low-level instructions pass through where they are written; object code first",
        "{apply, {m2, prepare, [1]}}, {load_module, m1}, {apply, {m2, done, []}}",
        "{load_object_code, {a, \"1\", [m2]}}, point_of_no_return, \
         {load, {m2, brutal_purge, brutal_purge}}, {load_module, m1}",
        r#"{load_object_code,{a,"2",[m1]}}
           point_of_no_return
           {apply,{m2,prepare,[1]}}
           {load,{m1,brutal_purge,brutal_purge}}
           {apply,{m2,done,[]}}"#,
        r#"{load_object_code,{a,"1",[m2,m1]}}
           point_of_no_return
           {load,{m2,brutal_purge,brutal_purge}}
           {load,{m1,brutal_purge,brutal_purge}}"#,
    ),
];

#[test]
fn every_high_level_instruction_translates_as_systools_does() {
    for (case, up, down, expected_up, expected_down) in TRANSLATIONS {
        let root = a_root(up, down);
        let (generated_up, generated_down) = scripts(root.path());
        assert_eq!(generated_up, lines(expected_up), "{case}: up");
        assert_eq!(generated_down, lines(expected_down), "{case}: down");
    }
}

/// DepMods: `(case, up entry = down entry, up script, down script)`. In dependency
/// order (every module before the ones it depends on) suspend and code_change go both
/// ways; loads go in reverse up (dependencies first) and in order down; resume in
/// reverse. Where the instructions are written does not change the order, only where
/// the group goes.
const DEP_MODS: &[(&str, &str, &str, &str)] = &[
    (
        "a chain m1 -> m2 -> m3",
        "{update, m1, {advanced, []}, [m2]}, {update, m2, {advanced, []}, [m3]}, \
         {update, m3, {advanced, []}, []}",
        r#"{load_object_code,{a,"2",[m1,m2,m3]}}
           point_of_no_return
           {suspend,[m1,m2,m3]}
           {load,{m3,brutal_purge,brutal_purge}}
           {load,{m2,brutal_purge,brutal_purge}}
           {load,{m1,brutal_purge,brutal_purge}}
           {code_change,up,[{m1,[]},{m2,[]},{m3,[]}]}
           {resume,[m3,m2,m1]}"#,
        r#"{load_object_code,{a,"1",[m1,m2,m3]}}
           point_of_no_return
           {suspend,[m1,m2,m3]}
           {code_change,down,[{m1,[]},{m2,[]},{m3,[]}]}
           {load,{m1,brutal_purge,brutal_purge}}
           {load,{m2,brutal_purge,brutal_purge}}
           {load,{m3,brutal_purge,brutal_purge}}
           {resume,[m3,m2,m1]}"#,
    ),
    (
        "the same chain written backwards",
        "{update, m3, {advanced, []}}, {update, m2, {advanced, []}, [m3]}, \
         {update, m1, {advanced, []}, [m2]}",
        r#"{load_object_code,{a,"2",[m1,m2,m3]}}
           point_of_no_return
           {suspend,[m1,m2,m3]}
           {load,{m3,brutal_purge,brutal_purge}}
           {load,{m2,brutal_purge,brutal_purge}}
           {load,{m1,brutal_purge,brutal_purge}}
           {code_change,up,[{m1,[]},{m2,[]},{m3,[]}]}
           {resume,[m3,m2,m1]}"#,
        r#"{load_object_code,{a,"1",[m1,m2,m3]}}
           point_of_no_return
           {suspend,[m1,m2,m3]}
           {code_change,down,[{m1,[]},{m2,[]},{m3,[]}]}
           {load,{m1,brutal_purge,brutal_purge}}
           {load,{m2,brutal_purge,brutal_purge}}
           {load,{m3,brutal_purge,brutal_purge}}
           {resume,[m3,m2,m1]}"#,
    ),
    (
        "m1 depends on a library m3; m2 is unrelated and stays where it is written",
        "{load_module, m3}, {load_module, m2}, {update, m1, {advanced, []}, [m3]}",
        r#"{load_object_code,{a,"2",[m1,m3,m2]}}
           point_of_no_return
           {suspend,[m1]}
           {load,{m3,brutal_purge,brutal_purge}}
           {load,{m1,brutal_purge,brutal_purge}}
           {code_change,up,[{m1,[]}]}
           {resume,[m1]}
           {load,{m2,brutal_purge,brutal_purge}}"#,
        r#"{load_object_code,{a,"1",[m1,m3,m2]}}
           point_of_no_return
           {suspend,[m1]}
           {code_change,down,[{m1,[]}]}
           {load,{m1,brutal_purge,brutal_purge}}
           {load,{m3,brutal_purge,brutal_purge}}
           {resume,[m1]}
           {load,{m2,brutal_purge,brutal_purge}}"#,
    ),
    (
        "a cycle m1 <-> m2 keeps the written order, and m3 (on which m2 depends) follows",
        "{update, m2, {advanced, []}, [m1, m3]}, {update, m1, {advanced, []}, [m2]}, \
         {update, m3, {advanced, []}}",
        r#"{load_object_code,{a,"2",[m2,m1,m3]}}
           point_of_no_return
           {suspend,[m2,m1,m3]}
           {load,{m3,brutal_purge,brutal_purge}}
           {load,{m1,brutal_purge,brutal_purge}}
           {load,{m2,brutal_purge,brutal_purge}}
           {code_change,up,[{m2,[]},{m1,[]},{m3,[]}]}
           {resume,[m3,m1,m2]}"#,
        r#"{load_object_code,{a,"1",[m2,m1,m3]}}
           point_of_no_return
           {suspend,[m2,m1,m3]}
           {code_change,down,[{m2,[]},{m1,[]},{m3,[]}]}
           {load,{m2,brutal_purge,brutal_purge}}
           {load,{m1,brutal_purge,brutal_purge}}
           {load,{m3,brutal_purge,brutal_purge}}
           {resume,[m3,m1,m2]}"#,
    ),
];

#[test]
fn dep_mods_order_loads_suspends_and_resumes_up_and_down() {
    for (case, entry, expected_up, expected_down) in DEP_MODS {
        let root = a_root(entry, entry);
        let (up, down) = scripts(root.path());
        assert_eq!(up, lines(expected_up), "{case}: up");
        assert_eq!(down, lines(expected_down), "{case}: down");
    }
}

#[test]
fn applications_added_and_removed_between_releases() {
    // b is new in release 2: added (started, which loads it) going up, removed going down,
    // as systools writes it.
    let root = root(&[("1", &[A1]), ("2", &[A1, B1])], &[]);
    let (up, down) = scripts(root.path());
    assert_eq!(
        up,
        lines(
            r#"{load_object_code,{b,"1",[b1,b2]}}
               point_of_no_return
               {load,{b1,brutal_purge,brutal_purge}}
               {load,{b2,brutal_purge,brutal_purge}}
               {apply,{application,start,[b,permanent]}}"#
        )
    );
    assert_eq!(
        down,
        lines(
            r#"point_of_no_return
               {apply,{application,stop,[b]}}
               {remove,{b1,brutal_purge,brutal_purge}}
               {remove,{b2,brutal_purge,brutal_purge}}
               {purge,[b1,b2]}
               {apply,{application,unload,[b]}}"#
        )
    );
}

#[test]
fn an_included_application_is_loaded_before_and_removed_after_its_includers_script() {
    // Release 2's a includes c, which its supervisor starts: c is loaded, never
    // started, before a's script going up; removed, never stopped, after it going down.
    const A2_WITH_C: AppV = AppV { includes: &["c"], ..A2 };
    let appup = "{\"2\", [{\"1\", [{update, m1, supervisor}]}], \
                 [{\"1\", [{update, m1, supervisor}]}]}.";
    let root = root(&[("1", &[A1]), ("2", &[A2_WITH_C, C1])], &[("a-2", appup)]);
    let (up, down) = scripts(root.path());
    assert_eq!(
        up,
        lines(
            r#"{load_object_code,{c,"1",[c1]}}
               {load_object_code,{a,"2",[m1]}}
               point_of_no_return
               {load,{c1,brutal_purge,brutal_purge}}
               {apply,{application,load,[c]}}
               {suspend,[m1]}
               {load,{m1,brutal_purge,brutal_purge}}
               {code_change,up,[{m1,[]}]}
               {resume,[m1]}"#
        )
    );
    assert_eq!(
        down,
        lines(
            r#"{load_object_code,{a,"1",[m1]}}
               point_of_no_return
               {suspend,[m1]}
               {load,{m1,brutal_purge,brutal_purge}}
               {code_change,down,[{m1,[]}]}
               {resume,[m1]}
               {remove,{c1,brutal_purge,brutal_purge}}
               {purge,[c1]}
               {apply,{application,unload,[c]}}"#
        )
    );
}

#[test]
fn add_application_start_types() {
    let cases = [
        ("", "{apply,{application,start,[b,permanent]}}"),
        (", temporary", "{apply,{application,start,[b,temporary]}}"),
        (", load", "{apply,{application,load,[b]}}"),
        (", none", ""),
    ];
    for (start, applies) in cases {
        // b is in both releases, so only the appup's own add_application adds it (a
        // release that gains b would add it without being asked, as permanent).
        let appup =
            format!("{{\"2\", [{{\"1\", [{{add_application, b{start}}}]}}], [{{\"1\", []}}]}}.");
        let root = root(&[("1", &[A1, B1]), ("2", &[A2, B1])], &[("a-2", &appup)]);
        let (up, _) = scripts(root.path());
        let mut expected = lines(
            r#"{load_object_code,{b,"1",[b1,b2]}}
               point_of_no_return
               {load,{b1,brutal_purge,brutal_purge}}
               {load,{b2,brutal_purge,brutal_purge}}"#,
        );
        expected.extend(applies.split_whitespace().map(str::to_owned));
        assert_eq!(up, expected, "{start}");
    }
}

/// `(case, releases: 1 = a 1, 2 = a 2, appup of a 2 or None, expected message tail)`.
/// Messages start with `path:line:col: ` relative to the root; the part after the root
/// is compared.
#[test]
fn errors_name_the_appup_and_the_instruction() {
    let appup = |up: &str, down: &str| {
        Some(format!("{{\"2\",\n [{{\"1\", [{up}]}}],\n [{{\"1\", [{down}]}}]}}.\n"))
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (
            "missing appup",
            None,
            "lib/a-2/a.appup: no .appup here, but application a changes from \"1\" to \"2\"",
        ),
        (
            "bad syntax",
            Some("{\"2\",\n [{\"1\", [{update, m1}]}]\n [{\"1\", []}]}.\n".to_owned()),
            "lib/a-2/a.appup:3:2: expected ',' or '}'",
        ),
        (
            "bad shape",
            appup("{update, m1, {advanced, []}}", "{update, m1, sideways}"),
            "lib/a-2/a.appup:3:23: expected supervisor, soft, {advanced, Extra} or [Mod], \
             found sideways, in {update, Mod, ...}",
        ),
        (
            "unknown module",
            appup("{update, m1}", "{update, svc_hnadler, {advanced, []}}"),
            "lib/a-2/a.appup:3:10: {update, svc_hnadler, {advanced, []}}: module \
             svc_hnadler is not in a 1's .app",
        ),
        (
            "unknown module up",
            appup("{load_module, x}", "{load_module, x}"),
            "lib/a-2/a.appup:2:10: {load_module, x}: module x is not in a 2's .app",
        ),
        (
            "nothing to delete",
            appup("{delete_module, n}", ""),
            "lib/a-2/a.appup:2:10: {delete_module, n}: module n is not in a 1's .app",
        ),
        (
            "no entry for the old version",
            Some("{\"2\", [{\"0\", []}],\n [{\"1\", []}]}.".to_owned()),
            "lib/a-2/a.appup:1:7: no up entry from \"1\": this relup takes a between \"1\" \
             and \"2\"",
        ),
        (
            "no down entry",
            Some("{\"2\", [{\"1\", []}],\n [{\"0\", []}]}.".to_owned()),
            "lib/a-2/a.appup:2:2: no down entry to \"1\"",
        ),
        (
            "appup for another version",
            Some("{\"3\", [{\"1\", []}], [{\"1\", []}]}.".to_owned()),
            "lib/a-2/a.appup:1:2: the appup is for a \"3\", but it lies beside a \"2\"",
        ),
        (
            "undefined dependency",
            appup("{update, m1, {advanced, []}, [m9]}", ""),
            "lib/a-2/a.appup:2:10: {update, m1, {advanced, []}, [m9]}: DepMods of m1 names \
             m9, which no update",
        ),
        (
            "a module changed twice",
            appup("{load_module, m1},\n {update, m1}", ""),
            "lib/a-2/a.appup:3:2: {update, m1}: module m1 is already changed by \
             {load_module, m1} at ",
        ),
        (
            "something else before the point of no return",
            appup("{apply, {m1, f, []}}, point_of_no_return", ""),
            "lib/a-2/a.appup:2:10: {apply, {m1, f, []}}: apply before point_of_no_return",
        ),
        (
            "two points of no return",
            appup("point_of_no_return, point_of_no_return", ""),
            "lib/a-2/a.appup:2:30: point_of_no_return: a second point_of_no_return (the \
             first is at 2:10)",
        ),
        (
            "unsupported",
            appup("restart_emulator", ""),
            "lib/a-2/a.appup:2:10: restart_emulator: restart_emulator is not supported",
        ),
        (
            "a load that the relup check would refuse",
            appup("{load, {m2, brutal_purge, brutal_purge}}", ""),
            "lib/a-2/a.appup:2:10: {load, {m2, brutal_purge, brutal_purge}}: the relup \
             made from this would be refused: ",
        ),
        (
            "conflicting object code",
            appup("{load_module, m1}, {load_object_code, {a, \"1\", [m2]}}", ""),
            "lib/a-2/a.appup:2:10: {load_module, m1}: object code of a \"2\", but the \
             script already loads a \"1\"",
        ),
        (
            "restart of an application that is not there",
            appup("{restart_application, b}", ""),
            "lib/a-2/a.appup:2:10: {restart_application, b}: application b is not in \
             release \"1\", so it cannot be restarted",
        ),
        (
            "remove of an application that stays",
            appup("{remove_application, a}", ""),
            "lib/a-2/a.appup:2:10: {remove_application, a}: application a is still in \
             release \"2\"",
        ),
    ];
    for (case, appup, expected) in cases {
        let appups: Vec<(&str, &str)> =
            appup.as_deref().map(|text| ("a-2", text)).into_iter().collect();
        let root = root(&[("1", &[A1]), ("2", &[A2])], &appups);
        let error = match make_relup(root.path(), "1", "2") {
            Ok(relup) => panic!("{case}: made {}", relup.render()),
            Err(error) => error,
        };
        let shown = error.to_string();
        let prefix = format!("{}/", root.path().display());
        let shown = shown.strip_prefix(&prefix).unwrap_or(&shown);
        assert!(shown.starts_with(expected), "{case}:\n  {shown}\n  {expected}");
    }
}

#[test]
fn errors_about_the_releases() {
    let root = root(&[("1", &[A1]), ("2", &[A1])], &[]);
    let r = root.path();
    let message = |from: &str, to: &str| match make_relup(r, from, to) {
        Ok(relup) => panic!("made {}", relup.render()),
        Err(error) => error.to_string(),
    };
    assert!(message("1", "3").ends_with("RELEASES: there is no release \"3\" in RELEASES"));
    assert!(message("1", "1").contains("both are \"1\""));
    let error = make_relup(r, "1", "9").expect_err("no release 9");
    assert!(matches!(*error.kind, MakeRelupErrorKind::NoRelease { .. }));
    // An .app that is not what RELEASES says it is.
    std::fs::write(r.join("lib/a-1/a.app"), "{application, a, [{vsn, \"7\"}, {modules, []}]}.")
        .expect("write");
    assert!(message("1", "2").contains("this .app is for a \"7\", but release \"1\""));
}

#[test]
fn the_relup_is_the_file_it_writes_and_passes_the_checks() {
    let root = a_root("{update, m1, {advanced, []}}", "{update, m1, {advanced, []}}");
    let relup = make_relup(root.path(), "1", "2").expect("made");
    assert!(relup.check(&relup_path(root.path(), "2")).is_ok());
    let path = write_relup(root.path(), "2", &relup).expect("written");
    assert_eq!(path, root.path().join("releases/2/relup"));
    let read = crate::release::relup::read_relup(&path).expect("reads back");
    assert_eq!(read, relup, "positions and all");
    // Line 1 is the comment; the up script's first instruction is on line 4.
    assert_eq!(relup.up[0].instructions[0].pos, Pos::new(4, 5));
    let error = write_relup(root.path(), "1", &relup).expect_err("wrong release");
    assert!(error.to_string().contains("this is the relup of release \"2\", not of \"1\""));
}

/// A new host version (OTP: a new ERTS) means a node restart, where systools puts it: up,
/// `restart_new_emulator` first; down, `restart_emulator` last.
#[test]
fn a_new_host_version_restarts_the_node_first_up_and_last_down() {
    let root = a_root("{update, m1, {advanced, []}}", "{update, m1, {advanced, []}}");
    let r = root.path();
    let rel = r.join("releases/2/r.rel");
    let text = std::fs::read_to_string(&rel).expect(".rel");
    std::fs::write(&rel, text.replace("{hotcode, \"0.1.0\"}", "{hotcode, \"0.2.0\"}"))
        .expect(".rel");
    let releases = r.join("releases/RELEASES");
    let text = std::fs::read_to_string(&releases).expect("RELEASES");
    let text = text.replacen("\"2\", \"0.1.0\"", "\"2\", \"0.2.0\"", 1);
    std::fs::write(&releases, text).expect("RELEASES");
    let (up, down) = scripts(r);
    assert_eq!(up.first().map(String::as_str), Some("restart_new_emulator"), "{up:#?}");
    assert_eq!(up.iter().filter(|i| i.contains("restart")).count(), 1, "{up:#?}");
    assert_eq!(down.last().map(String::as_str), Some("restart_emulator"), "{down:#?}");
    assert_eq!(down.iter().filter(|i| i.contains("restart")).count(), 1, "{down:#?}");
    // The same host: no restart at all.
    let same = a_root("{update, m1, {advanced, []}}", "{update, m1, {advanced, []}}");
    let (up, down) = scripts(same.path());
    assert!(!up.iter().chain(&down).any(|i| i.contains("restart")), "{up:#?} {down:#?}");
}
