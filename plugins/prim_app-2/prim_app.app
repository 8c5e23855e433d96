%% prim_app, version 2: includes ch_app, whose top supervisor prim_sup now starts.
{application, prim_app,
 [{description, "Primary application of the included-application example"},
  {vsn, "2"},
  {modules, [prim_app, prim_sup]},
  {registered, [prim_sup]},
  {applications, []},
  {included_applications, [ch_app]},
  {mod, {prim_app, []}}]}.
