"""Lightning callbacks for behaviour that cuts across methods."""
