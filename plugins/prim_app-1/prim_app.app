%% prim_app, version 1: a top supervisor with no children yet.
{application, prim_app,
 [{description, "Primary application of the included-application example"},
  {vsn, "1"},
  {modules, [prim_app, prim_sup]},
  {registered, [prim_sup]},
  {applications, []},
  {mod, {prim_app, []}}]}.
